//! Typed, borrowed readings of JSON objects: the fast way to read a well-formed answer.
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

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON string, borrowed from the body when it has no escapes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Text<'de>(pub(super) Cow<'de, str>);

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

/// A value read and checked as a `Value` reading would check it (numbers in range, strings
/// valid UTF-8 with valid escapes, nesting within serde_json's limit), and then dropped without
/// being built: how the structs below skip the fields they do not name. serde's `IgnoredAny`
/// is not enough: serde_json skips with it without reading numbers or strings, so a body
/// `Value` refuses (a number such as `1e400`) would read here.
pub(super) struct Checked;

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
        pub(super) struct $name<'de> {
            $($(#[$fmeta])* pub(super) $field: Option<$ty>,)*
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
                        while let Some(key) = map.next_key::<$crate::translate::typed::Text<'de>>()? {
                            match &*key {
                                $($key => out.$field = map.next_value()?,)*
                                _ => {
                                    map.next_value::<$crate::translate::typed::Checked>()?;
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

pub(super) use json_object;

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
