//! Hot promotion: following a registry alias (`models:/<name>@<alias>`) while the function
//! runs, so that moving the alias (with the MLflow client or UI) changes the model served,
//! without a redeploy (`MODEL_REFRESH_SECONDS`).
//!
//! The check runs at the start of an invocation, never in the background: Lambda freezes
//! the sandbox between invocations, so a background task would not run then anyway, and a
//! check that runs when one is due costs nothing to the invocations in between. When
//! `MODEL_REFRESH_SECONDS` have passed since the last check, the alias is resolved again (one
//! REST call). If it points at another version, that version is fetched, built and checked
//! exactly as at a cold start ([`ModelSource::load_version`]), and only then swapped in, for
//! this invocation and the ones after it. Any failure (registry or artifact store
//! unreachable, a version that fails its checks, no time left) keeps the current model
//! serving, logs a warning and is tried again at the next due time; no invocation fails for
//! it.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::handler::error_chain;
use crate::registry::ModelVersion;
use crate::source::{Loaded, ModelSource};

/// Following one alias.
pub struct Promotion {
    source: ModelSource,
    every: Duration,
    /// When the alias is next resolved.
    next_check: Mutex<Instant>,
}

impl Promotion {
    /// Resolves `source`'s alias again every `every`, the first time `every` from now.
    pub fn new(source: ModelSource, every: Duration) -> Self {
        Self {
            source,
            every,
            next_check: Mutex::new(Instant::now() + every),
        }
    }

    /// How often the alias is resolved.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// Whether a check is due now; if so, the next one is set `every` from now, so that a
    /// failed check is tried again only then.
    fn due(&self) -> bool {
        let now = Instant::now();
        let mut next = match self.next_check.lock() {
            Ok(next) => next,
            Err(poisoned) => poisoned.into_inner(),
        };
        if now < *next {
            return false;
        }
        *next = now + self.every;
        true
    }

    /// If a check is due, resolves the alias and, if it moved away from `current` (loaded from
    /// `current_uri`), loads the version it points at now, in the memory the current model
    /// leaves; returns that model to swap in, and removes the current one's cached copy.
    /// Gives up after `budget` (the part of the invocation's time it may take), keeping the
    /// current model.
    pub async fn check(
        &self,
        current: &ModelVersion,
        current_uri: &str,
        budget: Option<Duration>,
    ) -> Option<Loaded> {
        if !self.due() {
            return None;
        }
        let (uri, registry) = self.source.registry()?;
        let started = std::time::Instant::now();
        let attempt = async {
            let version = registry.resolve(uri).await.map_err(Box::new)?;
            if version.version == current.version {
                return Ok(None);
            }
            let reserved = self.source.cached_bytes(current_uri).unwrap_or_default();
            let model = self.source.load_version(&version, reserved).await?;
            Ok::<_, crate::source::SourceError>(Some(Loaded {
                model,
                registered: Some(version),
            }))
        };
        let outcome = match budget {
            Some(budget) => tokio::time::timeout(budget, attempt).await.ok(),
            None => Some(attempt.await),
        };
        let refresh_ms = started.elapsed().as_secs_f64() * 1e3;
        match outcome {
            Some(Ok(None)) => {
                tracing::debug!(model_uri = %uri, model_version = current.version, refresh_ms, "alias unchanged");
                None
            }
            Some(Ok(Some(loaded))) => {
                if loaded.model.uri() != current_uri {
                    self.source.evict(current_uri);
                }
                let version = loaded.registered.as_ref();
                tracing::info!(
                    model_uri = %uri,
                    registered_model = version.map(|v| v.name.as_str()),
                    model_version = version.map(|v| v.version.as_str()),
                    run_id = version.and_then(|v| v.run_id.as_deref()),
                    previous_version = current.version,
                    location = loaded.model.uri(),
                    refresh_ms,
                    "model promoted: the alias moved, the new version serves from this invocation on"
                );
                Some(loaded)
            }
            Some(Err(error)) => {
                tracing::warn!(
                    model_uri = %uri,
                    model_version = current.version,
                    error = %error_chain(&error),
                    retry_in_s = self.every.as_secs_f64(),
                    refresh_ms,
                    "model refresh failed; the current version keeps serving"
                );
                None
            }
            None => {
                tracing::warn!(
                    model_uri = %uri,
                    model_version = current.version,
                    budget_ms = budget.map(|budget| budget.as_secs_f64() * 1e3),
                    retry_in_s = self.every.as_secs_f64(),
                    "model refresh took longer than the invocation could give it; the current \
                     version keeps serving"
                );
                None
            }
        }
    }
}
