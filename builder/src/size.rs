// SPDX-License-Identifier: Apache-2.0
//! Byte sizes written as `16MiB`, `32KiB`, `512` in board and image files.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Size(pub u64);

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;

impl Size {
    pub const fn bytes(self) -> u64 {
        self.0
    }
    pub const fn mib(n: u64) -> Size {
        Size(n * MIB)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a size; write a number with an optional KiB, MiB or GiB suffix, e.g. \"16MiB\""
)]
pub struct SizeError(pub String);

impl FromStr for Size {
    type Err = SizeError;
    fn from_str(s: &str) -> Result<Self, SizeError> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| SizeError(s.to_string()))?;
        let mul = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "K" => KIB,
            "MiB" | "M" => MIB,
            "GiB" | "G" => GIB,
            _ => return Err(SizeError(s.to_string())),
        };
        n.checked_mul(mul)
            .map(Size)
            .ok_or_else(|| SizeError(s.to_string()))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n != 0 && n % GIB == 0 {
            write!(f, "{}GiB", n / GIB)
        } else if n != 0 && n % MIB == 0 {
            write!(f, "{}MiB", n / MIB)
        } else if n != 0 && n % KIB == 0 {
            write!(f, "{}KiB", n / KIB)
        } else {
            write!(f, "{n}")
        }
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Size(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl schemars::JsonSchema for Size {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Size".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Bytes, or a number with a KiB/MiB/GiB suffix",
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": "^[0-9]+ ?(B|K|KiB|M|MiB|G|GiB)?$"}
            ]
        })
    }
}

/// Human form for messages: exact bytes plus a rounded unit.
pub fn human(n: u64) -> String {
    if n >= GIB {
        format!("{:.1}GiB", n as f64 / GIB as f64)
    } else if n >= MIB {
        format!("{:.1}MiB", n as f64 / MIB as f64)
    } else if n >= KIB {
        format!("{:.1}KiB", n as f64 / KIB as f64)
    } else {
        format!("{n}B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_units() {
        assert_eq!("16MiB".parse::<Size>(), Ok(Size(16 * MIB)));
        assert_eq!("32KiB".parse::<Size>(), Ok(Size(32 * KIB)));
        assert_eq!("512".parse::<Size>(), Ok(Size(512)));
        assert!("12MB".parse::<Size>().is_err());
        assert!("".parse::<Size>().is_err());
        assert!("99999999999999GiB".parse::<Size>().is_err());
    }

    proptest! {
        #[test]
        fn display_round_trips(n in 0u64..(1 << 50)) {
            let s = Size(n);
            prop_assert_eq!(s.to_string().parse::<Size>(), Ok(s));
        }
    }
}
