//! Whether raw JSON can be read back as a `serde_json::Value`. The codec accepts anything with
//! JSON syntax, and a raw value is stored and passed on as received; but a number such as `1e400`
//! has JSON syntax and no `f64`, so every later reader that parses the value (REST answers, the
//! history) would fail on it. This walks the value the way `Value` would parse it, without
//! building it.

use std::fmt;

use serde::Deserializer;
use serde::de::{self, Deserialize, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// True when `raw` parses as a `serde_json::Value` (numbers in range, escapes valid).
pub fn readable(raw: &RawValue) -> bool {
    serde_json::from_str::<Readable>(raw.get()).is_ok()
}

struct Readable;

impl<'de> Deserialize<'de> for Readable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Walk)
    }
}

struct Walk;

impl<'de> Visitor<'de> for Walk {
    type Value = Readable;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Readable, E> {
        Ok(Readable)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Readable, E> {
        Ok(Readable)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Readable, E> {
        Ok(Readable)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Readable, E> {
        if v.is_finite() { Ok(Readable) } else { Err(E::custom("number out of range")) }
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Readable, E> {
        Ok(Readable)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Readable, E> {
        Ok(Readable)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Readable, A::Error> {
        while seq.next_element::<Readable>()?.is_some() {}
        Ok(Readable)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Readable, A::Error> {
        while map.next_entry::<Readable, Readable>()?.is_some() {}
        Ok(Readable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> bool {
        readable(&serde_json::from_str::<Box<RawValue>>(text).expect("JSON syntax"))
    }

    #[test]
    fn numbers_that_fit_pass_and_numbers_that_do_not_fail() {
        for ok in [r#"{"a":1e300}"#, r#"{"a":-1.5e-400}"#, r#"{"a":18446744073709551616}"#, r#"[1,"x",null,true,{"b":[]}]"#] {
            assert!(check(ok), "{ok}");
        }
        for bad in [r#"{"a":1e400}"#, r#"{"a":-1e309}"#, r#"{"a":{"b":[0,2e308]}}"#, r#"[{"x":1e999}]"#] {
            assert!(!check(bad), "{bad}");
        }
        assert_eq!(check(r#"{"a":1e400}"#), serde_json::from_str::<serde_json::Value>(r#"{"a":1e400}"#).is_ok());
    }
}
