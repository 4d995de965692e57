//! How values are typed: small serde types over figment's values, and error messages
//! that name a value's type but never the value (secrets pass through here).

use figment::error::{Actual, Kind};
use figment::value::Value;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Where inside a value an error is, `[1]` for an array item, `.name` for a table's key.
pub(super) fn inner_path(mut value: &Value, path: &[String]) -> String {
    let mut out = String::new();
    for part in path {
        match value {
            Value::Array(_, items) => {
                out.push_str(&format!("[{part}]"));
                value = part
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| items.get(i))
                    .unwrap_or(value);
            }
            Value::Dict(_, dict) => {
                out.push_str(&format!(".{part}"));
                value = dict.get(part).unwrap_or(value);
            }
            _ => out.push_str(&format!(".{part}")),
        }
    }
    out
}

/// A serde error as `expected X, got <type>`: the value itself is never shown.
pub(super) fn describe(kind: &Kind) -> String {
    match kind {
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            format!("expected {expected}, got {}", type_name(actual))
        }
        Kind::Message(msg) => msg.clone(),
        other => other.to_string(),
    }
}

/// TOML's names for types.
pub(super) fn type_name(actual: &Actual) -> &'static str {
    match actual {
        Actual::Bool(_) => "boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "integer",
        Actual::Float(_) => "float",
        Actual::Str(_) | Actual::Char(_) => "string",
        Actual::Seq => "array",
        Actual::Map => "table",
        _ => "an unsupported value",
    }
}

/// A string; a number is accepted as its text (`client_id = 123`), as is a character
/// (figment reads `'x'` from the environment as one).
pub(super) struct Text(pub String);

/// Takes a scalar as text; booleans only when `bools` (a table of strings takes them).
struct TextVisitor {
    bools: bool,
}

impl Visitor<'_> for TextVisitor {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_char<E>(self, v: char) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        match self.bools {
            true => Ok(v.to_string()),
            false => Err(E::invalid_type(de::Unexpected::Bool(v), &self)),
        }
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextVisitor { bools: false }).map(Text)
    }
}

/// `true` or `false`.
pub(super) struct Flag(pub bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Flag;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true or false")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Flag, E> {
                Ok(Flag(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A humantime duration (`30s`, `10m`, `12h`).
pub(super) struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Text(raw) = Text::deserialize(d)?;
        humantime::parse_duration(&raw)
            .map(HumanDuration)
            .map_err(|e| {
                de::Error::custom(format!(
                    "{raw:?} is not a duration like 30s, 10m or 12h ({e})"
                ))
            })
    }
}

/// A list of strings, or one string of items separated by spaces or commas.
pub(super) struct List(pub Vec<String>);

impl<'de> Deserialize<'de> for List {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = List;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<List, E> {
                if v.trim_start().starts_with('[') {
                    // figment leaves a variable that does not parse as an array a string.
                    return Err(E::custom(
                        "starts with '[' but is not an array (check its brackets and quotes)",
                    ));
                }
                Ok(List(
                    v.split(|c: char| c.is_whitespace() || c == ',')
                        .filter(|p| !p.is_empty())
                        .map(String::from)
                        .collect(),
                ))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List, A::Error> {
                let mut out = Vec::new();
                while let Some(Text(item)) = seq.next_element()? {
                    out.push(item);
                }
                Ok(List(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A table whose values are strings (numbers and booleans are taken as their text).
pub(super) struct StringTable(pub BTreeMap<String, String>);

impl<'de> Deserialize<'de> for StringTable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Scalar(String);
        impl<'de> Deserialize<'de> for Scalar {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(TextVisitor { bools: true }).map(Scalar)
            }
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StringTable;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StringTable, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, Scalar(v))) = map.next_entry::<String, Scalar>()? {
                    out.insert(k, v);
                }
                Ok(StringTable(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A size in bytes: an integer, or a number with a unit (`512KiB`, `10MiB`, `1GB`; `KB`
/// is 1000 bytes, `KiB` 1024).
pub(super) struct ByteSize(pub u64);

impl ByteSize {
    pub(super) fn parse(raw: &str) -> Result<u64, String> {
        let s = raw.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{raw:?} is not a size like 65536, 512KiB or 10MiB"))?;
        let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "kib" | "k" => 1 << 10,
            "mb" => 1_000_000,
            "mib" | "m" => 1 << 20,
            "gb" => 1_000_000_000,
            "gib" | "g" => 1 << 30,
            _ => return Err(format!("{raw:?} is not a size like 65536, 512KiB or 10MiB")),
        };
        n.checked_mul(factor)
            .ok_or_else(|| format!("{raw:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Text(raw) = Text::deserialize(d)?;
        ByteSize::parse(&raw)
            .map(ByteSize)
            .map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::ByteSize;

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        for (raw, bytes) in [
            ("65536", 65536),
            ("512KiB", 512 * 1024),
            ("10MiB", 10 << 20),
            ("10 mib", 10 << 20),
            ("1MB", 1_000_000),
            ("2GiB", 2 << 30),
            ("16k", 16 * 1024),
        ] {
            assert_eq!(ByteSize::parse(raw), Ok(bytes), "{raw}");
        }
        for bad in [
            "",
            "MiB",
            "-1",
            "1.5MiB",
            "10 parsecs",
            "99999999999999999999GiB",
        ] {
            assert!(ByteSize::parse(bad).is_err(), "{bad}");
        }
    }
}
