//! The fast path for payloads in the plain form nearly every record has.
//!
//! A producer writes `{"features": {"t1": 9.84, "hum": 75.0, ...}, "pred_id": 123}`: an object
//! with exactly those two keys, the features all numbers, the keys and the `pred_id` string
//! plain ASCII without escapes. [`parse`] reads that form in one forward scan of the bytes,
//! faster than the general serde_json parse (docs/PERFORMANCE.md has the figures), and
//! writes the same row and `pred_id` text. Anything else (escapes, non-ASCII text, other keys or
//! value types, a missing feature, invalid JSON) makes it give up, and the caller parses the
//! payload again with the general parser, which accepts it or names what is wrong. So this
//! path only ever accepts; every rejection and its reason come from the general parser. What
//! it accepts is ASCII, so UTF-8 as a whole, as the general parser requires of every payload.
//!
//! Numbers are parsed as serde_json parses them with its `float_roundtrip` feature (which the
//! crate enables): integers exactly, decimals correctly rounded to the nearest f64 (Rust's
//! `str::parse`, like Python's `float`), then rounded to f32 for the model. The tests here
//! check the numbers against serde_json's; those in `event/tests.rs` and the `payload` fuzz
//! target check that both paths agree bit for bit wherever this one accepts.

use super::{MAX_PARTITION_KEY_CHARS, is_finite_number};
use crate::inputs::FieldNames;

/// Reads a plain payload into `row` (all NaN on entry; columns in the model's order) and
/// appends its `pred_id` JSON text to `pred_ids`. Returns `false`, with `row` and `pred_ids`
/// possibly partly written, when the payload is not in the plain form or cannot be accepted.
pub(super) fn parse(
    payload: &[u8],
    columns: &FieldNames,
    row: &mut [f32],
    pred_ids: &mut String,
) -> bool {
    let mut cursor = Cursor::new(payload);
    let (mut features, mut pred_id) = (false, false);
    if !cursor.eat(b'{') {
        return false;
    }
    loop {
        let Some((key, _)) = cursor.plain_string() else {
            return false;
        };
        if !cursor.eat(b':') {
            return false;
        }
        let read = match key {
            b"features" if !features => {
                features = true;
                read_features(&mut cursor, columns, row)
            }
            b"pred_id" if !pred_id => {
                pred_id = true;
                read_pred_id(&mut cursor, pred_ids)
            }
            _ => false,
        };
        if !read {
            return false;
        }
        if cursor.eat(b'}') {
            break;
        }
        if !cursor.eat(b',') {
            return false;
        }
    }
    cursor.at_end() && features && pred_id && !row.iter().any(|value| value.is_nan())
}

/// Keys the model does not use that one `features` object may have on this path; a payload
/// with more goes to the general parser.
const UNKNOWN_KEYS: usize = 16;

/// Reads `{"column": number, ...}` into the row; numbers under keys the model does not use
/// are skipped. A key given twice (a column, or another key: plain keys have one spelling)
/// makes it give up, for the general parser to reject the payload.
fn read_features(cursor: &mut Cursor<'_>, columns: &FieldNames, row: &mut [f32]) -> bool {
    if !cursor.eat(b'{') {
        return false;
    }
    if cursor.eat(b'}') {
        return true;
    }
    let mut unknown: [&[u8]; UNKNOWN_KEYS] = [&[]; UNKNOWN_KEYS];
    let mut unknowns = 0;
    loop {
        let Some((key, _)) = cursor.plain_string() else {
            return false;
        };
        if !cursor.eat(b':') {
            return false;
        }
        let Some(value) = cursor.number().and_then(|number| number.value()) else {
            return false;
        };
        match columns.position(key).and_then(|column| row.get_mut(column)) {
            // Set values are finite, so a column still NaN has not been given.
            Some(slot) => {
                let value = value as f32;
                if !value.is_finite() || !slot.is_nan() {
                    return false;
                }
                *slot = value;
            }
            None => {
                if unknown.get(..unknowns).unwrap_or_default().contains(&key) {
                    return false;
                }
                let Some(slot) = unknown.get_mut(unknowns) else {
                    return false;
                };
                *slot = key;
                unknowns += 1;
            }
        }
        if cursor.eat(b'}') {
            return true;
        }
        if !cursor.eat(b',') {
            return false;
        }
    }
}

/// Reads a `pred_id` that is a finite number or a plain string of 1 to 256 characters, and
/// appends its JSON text (a string with its quotes) to `pred_ids`.
fn read_pred_id(cursor: &mut Cursor<'_>, pred_ids: &mut String) -> bool {
    // Plain strings and numbers are ASCII: one byte per character.
    let (key_length, text) = if cursor.peek() == Some(b'"') {
        match cursor.plain_string() {
            Some((contents, quoted)) => (contents.len(), quoted),
            None => return false,
        }
    } else {
        match cursor.number() {
            Some(number) => (number.text.len(), number.text),
            None => return false,
        }
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return false;
    };
    let accepted = (1..=MAX_PARTITION_KEY_CHARS).contains(&key_length)
        && (text.starts_with('"') || is_finite_number(text));
    if accepted {
        pred_ids.push_str(text);
    }
    accepted
}

/// A JSON number as [`Cursor::number`] read it.
struct Number<'p> {
    /// The number as written.
    text: &'p [u8],
    negative: bool,
    /// The digits, without the sign, point and exponent, as an integer; `None` if more than
    /// a u64 holds.
    digits: Option<u64>,
    /// The power of ten `digits` is multiplied by; `None` if out of the range read here.
    exponent: Option<i32>,
    /// Whether the number is written as an integer (no point, no exponent).
    integer: bool,
}

/// Powers of ten that an f64 holds exactly.
const EXACT_POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Integers up to 2^53 are exact in an f64.
const MAX_EXACT_INTEGER: u64 = 1 << 53;

impl Number<'_> {
    /// The number's value, as serde_json's `float_roundtrip` parse gives it: an integer
    /// converted from its exact value, a decimal correctly rounded; `None` beyond f64's range.
    fn value(&self) -> Option<f64> {
        let magnitude = match (self.digits, self.exponent) {
            // An integer that fits a u64, as serde_json reads it: one rounding.
            (Some(digits), _) if self.integer => Some(digits as f64),
            // Both exact, so one multiplication or division rounds correctly (Clinger's
            // fast path): most decimals of up to 15 digits.
            (Some(digits), Some(exponent)) if digits <= MAX_EXACT_INTEGER => {
                let power = EXACT_POWERS_OF_TEN.get(exponent.unsigned_abs() as usize);
                power.map(|&power| {
                    if exponent < 0 {
                        digits as f64 / power
                    } else {
                        digits as f64 * power
                    }
                })
            }
            _ => None,
        };
        match magnitude {
            Some(magnitude) if self.negative => Some(-magnitude),
            Some(magnitude) => Some(magnitude),
            // Longer decimals: the standard library's correctly rounded parse. Beyond f64's
            // range it gives infinity, where serde_json gives an error.
            None => std::str::from_utf8(self.text)
                .ok()?
                .parse()
                .ok()
                .filter(|value: &f64| value.is_finite()),
        }
    }
}

/// The rest of a payload, read forward over JSON whitespace and tokens.
struct Cursor<'p> {
    rest: &'p [u8],
}

impl<'p> Cursor<'p> {
    fn new(bytes: &'p [u8]) -> Self {
        Self { rest: bytes }
    }

    /// Skips whitespace and returns the next byte.
    fn peek(&mut self) -> Option<u8> {
        while let [b' ' | b'\n' | b'\r' | b'\t', rest @ ..] = self.rest {
            self.rest = rest;
        }
        self.rest.first().copied()
    }

    /// Consumes `byte` if it is the next token.
    fn eat(&mut self, byte: u8) -> bool {
        let next = self.peek() == Some(byte);
        if next {
            self.advance(1);
        }
        next
    }

    /// Whether only whitespace is left.
    fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    fn advance(&mut self, count: usize) {
        self.rest = self.rest.get(count..).unwrap_or_default();
    }

    /// A string of printable ASCII without escapes: its contents, and the string with its
    /// quotes.
    fn plain_string(&mut self) -> Option<(&'p [u8], &'p [u8])> {
        if self.peek() != Some(b'"') {
            return None;
        }
        let string = self.rest;
        let length = string
            .iter()
            .skip(1)
            .position(|&byte| byte == b'"' || byte == b'\\' || !(0x20..0x80).contains(&byte))?;
        let (quoted, rest) = string.split_at_checked(length + 2)?;
        if quoted.last() != Some(&b'"') {
            return None;
        }
        self.rest = rest;
        Some((quoted.get(1..=length)?, quoted))
    }

    /// A number in JSON's grammar, `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, read
    /// in one pass.
    fn number(&mut self) -> Option<Number<'p>> {
        self.peek();
        let start = self.rest;
        let negative = self.skip(b'-', b'-');
        let mut digits = Digits::default();
        match self.rest.first()? {
            b'0' => self.advance(1),
            b'1'..=b'9' => self.digits(&mut digits),
            _ => return None,
        }
        let integer_digits = digits.count;
        let integer = !matches!(self.rest.first(), Some(b'.' | b'e' | b'E'));
        if self.skip(b'.', b'.') {
            self.digits(&mut digits);
            if digits.count == integer_digits {
                return None;
            }
        }
        let fraction_digits = (digits.count - integer_digits) as i32;
        let mut exponent = Some(-fraction_digits);
        if self.skip(b'e', b'E') {
            let negative_exponent = self.skip(b'-', b'-');
            if !negative_exponent {
                self.skip(b'+', b'+');
            }
            let mut written = Digits::default();
            self.digits(&mut written);
            if written.count == 0 {
                return None;
            }
            let written = written
                .value()
                .and_then(|written| i32::try_from(written).ok());
            let written = if negative_exponent {
                written.map(|written| -written)
            } else {
                written
            };
            exponent = written.and_then(|written| written.checked_sub(fraction_digits));
        }
        let length = start.len() - self.rest.len();
        Some(Number {
            text: start.get(..length)?,
            negative,
            digits: digits.value(),
            exponent,
            integer,
        })
    }

    /// Consumes the next byte, without skipping whitespace, if it is `one` or `other`.
    fn skip(&mut self, one: u8, other: u8) -> bool {
        match self.rest {
            [byte, rest @ ..] if *byte == one || *byte == other => {
                self.rest = rest;
                true
            }
            _ => false,
        }
    }

    /// Consumes ASCII digits, appending them to `digits`.
    fn digits(&mut self, digits: &mut Digits) {
        while let [byte @ b'0'..=b'9', rest @ ..] = self.rest {
            digits.value = digits
                .value
                .wrapping_mul(10)
                .wrapping_add(u64::from(byte - b'0'));
            digits.count += 1;
            self.rest = rest;
        }
    }
}

/// Decimal digits read into an integer.
#[derive(Default)]
struct Digits {
    value: u64,
    count: usize,
}

impl Digits {
    /// The integer, if it surely fits a u64 (19 digits do; leading zeros count as digits).
    fn value(&self) -> Option<u64> {
        (self.count <= 19).then_some(self.value)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use proptest::prelude::*;

    use super::*;

    /// JSON number texts that stress the fast path's number parsing: integers of every length,
    /// decimals on both sides of 15 significant digits, exponents, and signs.
    pub(in crate::event) fn number_text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|value| value.to_string()),
            any::<u64>().prop_map(|value| value.to_string()),
            any::<f64>().prop_map(|value| format!("{value:?}")),
            any::<f64>().prop_map(|value| format!("{value:e}")),
            any::<f32>().prop_map(|value| format!("{:?}", f64::from(value))),
            "-?(0|[1-9][0-9]{0,25})(\\.[0-9]{1,25})?([eE][+-]?[0-9]{1,3})?",
            proptest::sample::select(vec![
                "-0",
                "0.0",
                "-0.0",
                "1e22",
                "1e23",
                "9007199254740993",
                "18446744073709551616",
                "3.4028235e38",
                "3.4028236e38",
                "1.17549435e-38",
                "1e-50",
                "0.1",
                "0e5",
            ])
            .prop_map(String::from),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 5_000, ..ProptestConfig::default() })]

        #[test]
        fn numbers_read_as_serde_json_reads_them(text in number_text()) {
            let read = Cursor::new(text.as_bytes()).number().and_then(|number| number.value());
            let expected = serde_json::from_str::<f64>(&text).ok();
            prop_assert_eq!(read.map(f64::to_bits), expected.map(f64::to_bits), "{}", text);
        }
    }

    #[test]
    fn only_json_numbers_are_numbers() {
        for text in [
            "", "-", "+1", ".5", "1.", "01", "1e", "1e+", "0x10", "NaN", "Infinity",
        ] {
            let number = Cursor::new(text.as_bytes()).number();
            let whole = number.is_some_and(|number| number.text.len() == text.len());
            assert!(!whole, "{text:?}");
        }
    }
}
