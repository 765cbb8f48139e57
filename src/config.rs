//! Settings read once from the environment at cold start. A wrong value stops the cold start
//! with a message naming the variable. The README's configuration table lists the same.

use std::path::PathBuf;

use thiserror::Error;

/// Model directory used when `MODEL_URI` is not set: the bundled model, relative to the
/// working directory (the repository root locally, `/var/task` in the Lambda image).
pub const DEFAULT_MODEL_DIR: &str = "models/bike-demand";
/// Name stamped on prediction events when `MODEL_NAME` is not set.
pub const DEFAULT_MODEL_NAME: &str = "bike-demand";
/// Version stamped on prediction events when `RUN_ID` is not set.
pub const DEFAULT_RUN_ID: &str = "local";
/// ONNX Runtime library used when `ORT_DYLIB_PATH` is not set: looked up next to the
/// executable first, then by the system loader.
pub const DEFAULT_ORT_LIBRARY: &str = "libonnxruntime.so";

/// Where the model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelLocation {
    /// A local MLflow model directory.
    Directory(PathBuf),
}

/// The service's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where to load the model from (`MODEL_URI`).
    pub model: ModelLocation,
    /// Model name on prediction events (`MODEL_NAME`).
    pub model_name: String,
    /// Model version on prediction events: the MLflow run id (`RUN_ID`).
    pub run_id: String,
    /// Return predictions without publishing them (`TEST_RUN`).
    pub test_run: bool,
    /// Kinesis stream the prediction events go to (`OUTPUT_STREAM`).
    pub output_stream: Option<String>,
    /// ONNX Runtime shared library (`ORT_DYLIB_PATH`).
    pub ort_library: PathBuf,
}

/// A variable has a value the service cannot use.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The value cannot be parsed.
    #[error("{variable}={value:?} is not valid: {expected}")]
    Invalid {
        /// The environment variable.
        variable: &'static str,
        /// Its value.
        value: String,
        /// What it should be.
        expected: &'static str,
    },
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`, which returns a variable's value if set.
    /// Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let model = match get("MODEL_URI") {
            Some(uri) if uri.contains("://") => {
                return Err(ConfigError::Invalid {
                    variable: "MODEL_URI",
                    value: uri,
                    expected: "a local MLflow model directory",
                });
            }
            Some(dir) => ModelLocation::Directory(dir.into()),
            None => ModelLocation::Directory(DEFAULT_MODEL_DIR.into()),
        };
        let test_run = match get("TEST_RUN") {
            Some(value) => parse_bool("TEST_RUN", value)?,
            None => false,
        };
        Ok(Self {
            model,
            model_name: get("MODEL_NAME").unwrap_or_else(|| DEFAULT_MODEL_NAME.into()),
            run_id: get("RUN_ID").unwrap_or_else(|| DEFAULT_RUN_ID.into()),
            test_run,
            output_stream: get("OUTPUT_STREAM"),
            ort_library: get("ORT_DYLIB_PATH")
                .unwrap_or_else(|| DEFAULT_ORT_LIBRARY.into())
                .into(),
        })
    }
}

/// Parses a boolean the way the Python service's users write it (`True`, `False`, ...).
fn parse_bool(variable: &'static str, value: String) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(ConfigError::Invalid {
            variable,
            value,
            expected: "True or False",
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_serve_the_bundled_model() {
        let config = config(&[]).unwrap();
        assert_eq!(
            config.model,
            ModelLocation::Directory(DEFAULT_MODEL_DIR.into())
        );
        assert_eq!(config.model_name, DEFAULT_MODEL_NAME);
        assert_eq!(config.run_id, DEFAULT_RUN_ID);
        assert!(!config.test_run);
        assert_eq!(config.output_stream, None);
        assert_eq!(config.ort_library, PathBuf::from(DEFAULT_ORT_LIBRARY));
    }

    #[test]
    fn test_run_accepts_python_spellings() {
        for (value, expected) in [
            ("True", true),
            ("true", true),
            ("1", true),
            ("False", false),
            ("0", false),
        ] {
            assert_eq!(
                config(&[("TEST_RUN", value)]).unwrap().test_run,
                expected,
                "{value}"
            );
        }
    }

    #[test]
    fn bad_test_run_names_the_variable() {
        let error = config(&[("TEST_RUN", "maybe")]).unwrap_err();
        assert!(
            error.to_string().starts_with("TEST_RUN=\"maybe\""),
            "{error}"
        );
    }

    #[test]
    fn values_are_taken_from_the_environment() {
        let config = config(&[
            ("MODEL_URI", "/opt/model"),
            ("MODEL_NAME", "m"),
            ("RUN_ID", "abc"),
            ("OUTPUT_STREAM", "out"),
            ("ORT_DYLIB_PATH", "/lib/ort.so"),
        ])
        .unwrap();
        assert_eq!(config.model, ModelLocation::Directory("/opt/model".into()));
        assert_eq!(config.model_name, "m");
        assert_eq!(config.run_id, "abc");
        assert_eq!(config.output_stream.as_deref(), Some("out"));
        assert_eq!(config.ort_library, PathBuf::from("/lib/ort.so"));
    }
}
