//! Typed, borrowed readings of JSON: the fast way to read a well-formed body.
//!
//! A body read into a [`serde_json::Value`] costs an allocation for every key, string, object
//! and array in it, most of them for fields a translator never looks at, and as much again to
//! free them. The structs that [`json_object!`] declares read only the fields they name, borrow
//! strings from the body where they need no unescaping, and skip everything else without
//! building it.
//!
//! They are strict where the `Value` readers are lenient (a count of the wrong type fails the
//! whole reading instead of being ignored) and say nothing about *what* is wrong. So a
//! translator tries them first and, when they fail, reads the body again the `Value` way,
//! which either gives the same answer or names the field at fault: a reading that succeeds here
//! must give the same bytes as the `Value` reading of the same body, which the fuzz target
//! checks for every input.

use std::borrow::Cow;
use std::fmt;

use std::collections::HashMap;

use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// A JSON string, borrowed from the body when it has no escapes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Text<'de>(pub Cow<'de, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;

        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(text)))
            }

            fn visit_str<E>(self, text: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text.to_owned())))
            }

            fn visit_string<E>(self, text: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text)))
            }
        }

        deserializer.deserialize_str(TextVisitor)
    }
}

/// A string or an array of `T`: how both dialects write a message's content.
#[derive(Debug)]
pub enum StrOr<'de, T> {
    Text(Text<'de>),
    Parts(Vec<T>),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for StrOr<'de, T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrOrVisitor<T>(std::marker::PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for StrOrVisitor<T> {
            type Value = StrOr<'de, T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array")
            }

            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(StrOr::Text(Text(Cow::Borrowed(text))))
            }

            fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
                Ok(StrOr::Text(Text(Cow::Owned(text.to_owned()))))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Self::Value, A::Error> {
                let mut parts = Vec::new();
                while let Some(part) = items.next_element()? {
                    parts.push(part);
                }
                Ok(StrOr::Parts(parts))
            }
        }

        deserializer.deserialize_any(StrOrVisitor(std::marker::PhantomData))
    }
}

/// A value read and checked as a `Value` reading would check it (numbers in range, strings
/// valid UTF-8 with valid escapes, nesting within serde_json's limit), and then dropped without
/// being built: how the structs below skip the fields they do not name. serde's `IgnoredAny`
/// is not enough: serde_json skips with it without reading numbers or strings, so a body
/// `Value` refuses (a number such as `1e400`) would read here.
#[derive(Debug)]
pub struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any json value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Checked, A::Error> {
        while items.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut fields: A) -> Result<Checked, A::Error> {
        while fields.next_key::<Text<'de>>()?.is_some() {
            fields.next_value::<Checked>()?;
        }
        Ok(Checked)
    }
}

/// A JSON object's members in the order written: each key (unescaped) with its value as the
/// bytes the writer wrote. Every value is checked as a `Value` reading checks it ([`Checked`]),
/// so a body read as members reads as a `serde_json::Map` too. What a router needs of a
/// client's body: a few fields read, the rest passed on as the client wrote them.
pub struct Members<'de>(Vec<(Text<'de>, &'de RawValue)>);

/// Above this many members, [`Members::write_with`] finds keys given twice with a hash map
/// rather than by comparing each with the ones after it.
const LINEAR_DEDUP: usize = 32;

impl<'de> Members<'de> {
    /// Reads `body`, which must be one JSON object.
    pub fn parse(body: &'de [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// The value of `key`, from its last member when the key is given more than once (as a
    /// `serde_json::Map` keeps it).
    pub fn get(&self, key: &str) -> Option<&'de RawValue> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| **k == *key)
            .map(|(_, v)| *v)
    }

    /// `key`'s value read as a `T`; `None` when the key is absent or its value is not a `T`.
    pub fn read<T: Deserialize<'de>>(&self, key: &str) -> Option<T> {
        serde_json::from_str(self.get(key)?.get()).ok()
    }

    /// The object written out again without the member `skip` and with `set.0`'s value
    /// replaced by the string `set.1` (added last when absent). A key given more than once is
    /// written once, with its last value, where its last member was; every other value is
    /// written as the client wrote it.
    pub fn write_with(&self, skip: &str, set: (&str, &str)) -> Vec<u8> {
        let members = &self.0;
        let extra = set.0.len() + set.1.len() + 8;
        let mut out = Vec::with_capacity(
            members
                .iter()
                .map(|(k, v)| k.len() + v.get().len() + 4)
                .sum::<usize>()
                + extra,
        );
        let last: Option<HashMap<&str, usize>> = (members.len() > LINEAR_DEDUP).then(|| {
            members
                .iter()
                .enumerate()
                .map(|(i, (k, _))| (&**k, i))
                .collect()
        });
        let superseded = |i: usize, key: &str| match &last {
            Some(last) => last.get(key) != Some(&i),
            None => members[i + 1..].iter().any(|(k, _)| **k == *key),
        };
        let mut wrote_set = false;
        out.push(b'{');
        for (i, (key, value)) in members.iter().enumerate() {
            if **key == *skip || superseded(i, key) {
                continue;
            }
            if out.len() > 1 {
                out.push(b',');
            }
            // Writing a string cannot fail.
            let _ = serde_json::to_writer(&mut out, &**key);
            out.push(b':');
            if **key == *set.0 {
                let _ = serde_json::to_writer(&mut out, set.1);
                wrote_set = true;
            } else {
                out.extend_from_slice(value.get().as_bytes());
            }
        }
        if !wrote_set {
            if out.len() > 1 {
                out.push(b',');
            }
            let _ = serde_json::to_writer(&mut out, set.0);
            out.push(b':');
            let _ = serde_json::to_writer(&mut out, set.1);
        }
        out.push(b'}');
        out
    }
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;

        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a json object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut fields: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some(key) = fields.next_key::<Text<'de>>()? {
                    let value: &'de RawValue = fields.next_value()?;
                    // serde_json takes a raw value without reading its numbers and strings.
                    serde_json::from_str::<Checked>(value.get()).map_err(A::Error::custom)?;
                    members.push((key, value));
                }
                Ok(Members(members))
            }
        }

        deserializer.deserialize_map(MembersVisitor)
    }
}

/// Declares a struct of optional fields read from a JSON object by key, and its
/// `Deserialize`:
/// - only an object is accepted (serde's derive also takes an array of the fields in order,
///   which a `Value` reader would refuse);
/// - `null` reads as absent, as in the `Value` readers;
/// - a key given twice keeps its last value, as `serde_json::Map` does;
/// - keys not named are checked and skipped without being built ([`Checked`]).
///
/// A struct that borrows from the body takes the lifetime `'de`.
macro_rules! json_object {
    (
        $(#[$meta:meta])*
        struct $name:ident<'de> { $($(#[$fmeta:meta])* $field:ident: $ty:ty = $key:literal,)* }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub(crate) struct $name<'de> {
            $($(#[$fmeta])* pub(crate) $field: Option<$ty>,)*
            _body: std::marker::PhantomData<&'de str>,
        }

        impl<'de> serde::Deserialize<'de> for $name<'de> {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct ObjectVisitor<'de>(std::marker::PhantomData<&'de str>);

                impl<'de> serde::de::Visitor<'de> for ObjectVisitor<'de> {
                    type Value = $name<'de>;

                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a json object")
                    }

                    fn visit_map<M: serde::de::MapAccess<'de>>(
                        self,
                        mut map: M,
                    ) -> Result<Self::Value, M::Error> {
                        let mut out = $name::default();
                        while let Some(key) = map.next_key::<$crate::json::Text<'de>>()? {
                            match &*key {
                                $($key => out.$field = map.next_value()?,)*
                                _ => {
                                    map.next_value::<$crate::json::Checked>()?;
                                }
                            }
                        }
                        Ok(out)
                    }
                }

                deserializer.deserialize_map(ObjectVisitor(std::marker::PhantomData))
            }
        }
    };
}

pub(crate) use json_object;

#[cfg(test)]
mod tests {
    use super::*;

    json_object! {
        struct Sample<'de> {
            name: Text<'de> = "name",
            count: u64 = "count",
            inner: Box<Sample<'de>> = "inner",
        }
    }

    fn read(body: &str) -> Option<Sample<'_>> {
        serde_json::from_str(body).ok()
    }

    #[test]
    fn reads_named_fields_and_skips_the_rest() {
        let sample =
            read(r#"{"skip":[1,{"a":"b"}],"name":"plain","count":3,"inner":{"count":1}}"#).unwrap();
        assert!(matches!(
            sample.name.as_ref().unwrap().0,
            Cow::Borrowed("plain")
        ));
        assert_eq!(sample.count, Some(3));
        assert_eq!(sample.inner.unwrap().count, Some(1));
    }

    #[test]
    fn unescapes_into_an_owned_string() {
        let sample = read(r#"{"name":"a\"b"}"#).unwrap();
        assert!(matches!(sample.name.unwrap().0, Cow::Owned(text) if text == "a\"b"));
    }

    #[test]
    fn null_is_absent_and_the_last_of_two_keys_wins() {
        let sample = read(r#"{"name":null,"count":1,"count":2}"#).unwrap();
        assert_eq!((sample.name, sample.count), (None, Some(2)));
        assert_eq!(read(r#"{"count":1,"count":null}"#).unwrap().count, None);
    }

    fn rewrite(body: &str) -> String {
        let members = Members::parse(body.as_bytes()).unwrap();
        String::from_utf8(members.write_with("prefer", ("model", "m-2"))).unwrap()
    }

    #[test]
    fn members_keep_the_order_and_bytes_written() {
        let body = r#"{ "z": 1.50, "model" : "m-1", "prefer": "cost", "a": {"y":[1, 2]} }"#;
        assert_eq!(
            rewrite(body),
            r#"{"z":1.50,"model":"m-2","a":{"y":[1, 2]}}"#
        );
        let members = Members::parse(body.as_bytes()).unwrap();
        assert_eq!(members.read::<String>("model").as_deref(), Some("m-1"));
        assert_eq!(members.read::<u64>("z"), None);
        assert_eq!(members.get("a").map(RawValue::get), Some(r#"{"y":[1, 2]}"#));
        assert!(members.get("b").is_none());
    }

    #[test]
    fn members_given_twice_count_once_with_the_last_value() {
        assert_eq!(
            rewrite(r#"{"n":1,"model":"x","n":2}"#),
            r#"{"model":"m-2","n":2}"#
        );
        let members = Members::parse(br#"{"n":1,"n":2}"#).unwrap();
        assert_eq!(members.read::<u64>("n"), Some(2));
        // Past the linear bound, with a map: the same result.
        let many: Vec<String> = (0..100).map(|i| format!(r#""k{}":{i}"#, i % 40)).collect();
        let out = rewrite(&format!("{{{}}}", many.join(",")));
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value.as_object().unwrap().len(), 41);
        assert_eq!(value["k0"], 80);
        assert_eq!(out.matches("\"k0\"").count(), 1);
    }

    #[test]
    fn members_write_keys_escaped_and_add_a_missing_one() {
        assert_eq!(
            rewrite(r#"{"a\u0062":"\u00e9"}"#),
            r#"{"ab":"\u00e9","model":"m-2"}"#
        );
        assert_eq!(rewrite("{}"), r#"{"model":"m-2"}"#);
        assert_eq!(rewrite(r#"{"prefer":"x"}"#), r#"{"model":"m-2"}"#);
        assert_eq!(rewrite(r#"{"a\"b":0}"#), r#"{"a\"b":0,"model":"m-2"}"#);
    }

    #[test]
    fn members_refuse_what_a_map_refuses() {
        for body in [
            r#"[1]"#,
            r#"{"a":1e400}"#,
            r#"{"a":["\ud800"]}"#,
            r#"{"a":1,}"#,
            "{} {}",
            "",
        ] {
            assert!(Members::parse(body.as_bytes()).is_err(), "{body}");
            assert!(
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(body).is_err()
            );
        }
    }

    #[test]
    fn refuses_what_a_value_reader_refuses() {
        for body in [
            r#"["plain",3]"#,
            r#"{"count":-1}"#,
            r#"{"count":1.5}"#,
            r#"{"name":1}"#,
            r#"{"inner":["x"]}"#,
            r#"{"name":"x"} trailing"#,
            // Values of fields not named are checked as a `Value` reading checks them.
            r#"{"other":1e400}"#,
            r#"{"other":["\ud800"]}"#,
            r#"{"other":{"a":"\x"}}"#,
        ] {
            assert!(read(body).is_none(), "{body}");
        }
    }
}
