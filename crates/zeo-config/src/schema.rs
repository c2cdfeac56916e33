//! A small schema checker: validates one section's keys and subsections
//! against a fixed table and converts values with location-carrying errors.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;

use crate::datatypes::{expand_user, parse_bool, parse_count, parse_integer};
use crate::error::{Error, Location, Result};
use crate::syntax::{Item, KeyValue, Section};

/// One key a section type accepts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeySpec {
    /// Lower-case key name.
    pub name: &'static str,
    /// Whether the key may repeat (ZConfig's `multikey`).
    pub multi: bool,
}

/// A single-valued key.
pub(crate) const fn key(name: &'static str) -> KeySpec {
    KeySpec { name, multi: false }
}

/// A repeatable key.
pub(crate) const fn multikey(name: &'static str) -> KeySpec {
    KeySpec { name, multi: true }
}

/// A section whose keys and subsection types have been checked.
pub(crate) struct Checked<'a> {
    pub section: &'a Section,
    values: HashMap<&'static str, Vec<&'a KeyValue>>,
    children: Vec<&'a Section>,
}

impl<'a> Checked<'a> {
    /// Checks `section` against the allowed keys and subsection types.
    ///
    /// Unknown keys and sections, repeated single-valued keys and reused
    /// section names are errors, as in ZConfig.
    pub fn new(section: &'a Section, keys: &[KeySpec], sections: &[&str]) -> Result<Self> {
        let mut values: HashMap<&'static str, Vec<&'a KeyValue>> = HashMap::new();
        let mut children = Vec::new();
        let mut names: HashMap<&str, &Location> = HashMap::new();
        for item in &section.items {
            match item {
                Item::Key(kv) => {
                    let Some(spec) = keys.iter().find(|k| kv.key.eq_ignore_ascii_case(k.name))
                    else {
                        return Err(Error::UnknownKey {
                            at: kv.location.clone(),
                            key: kv.key.clone(),
                            section: section.to_string(),
                        });
                    };
                    let slot = values.entry(spec.name).or_default();
                    if let (false, Some(first)) = (spec.multi, slot.first()) {
                        return Err(Error::DuplicateKey {
                            at: kv.location.clone(),
                            key: kv.key.clone(),
                            section: section.to_string(),
                            first: first.location.clone(),
                        });
                    }
                    slot.push(kv);
                }
                Item::Section(child) => {
                    if !sections.contains(&child.type_name.as_str()) {
                        return Err(Error::UnknownSection {
                            at: child.location.clone(),
                            section_type: child.type_name.clone(),
                            parent: section.to_string(),
                        });
                    }
                    if let Some(name) = &child.name {
                        if let Some(first) = names.insert(name, &child.location) {
                            return Err(Error::DuplicateSectionName {
                                at: child.location.clone(),
                                name: name.clone(),
                                parent: section.to_string(),
                                first: first.clone(),
                            });
                        }
                    }
                    children.push(child);
                }
                // `%import` loads Python schema components; nothing to do here.
                Item::Import(_) => {}
            }
        }
        Ok(Checked {
            section,
            values,
            children,
        })
    }

    /// The single line for `key`, if present.
    pub fn line(&self, key: &str) -> Option<&'a KeyValue> {
        self.values.get(key).and_then(|v| v.first().copied())
    }

    /// Every line for a multikey, in order.
    pub fn lines(&self, key: &str) -> &[&'a KeyValue] {
        self.values.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Converts `key`'s value with `convert`, if the key is present.
    pub fn get<T>(
        &self,
        key: &str,
        convert: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>> {
        self.line(key)
            .map(|kv| convert_line(kv, &convert))
            .transpose()
    }

    /// Like [`Checked::get`], but the key must be present.
    pub fn require<T>(&self, key: &str, convert: impl Fn(&str) -> Result<T, String>) -> Result<T> {
        self.get(key, convert)?.ok_or_else(|| self.missing(key))
    }

    /// The error for a missing required key.
    pub fn missing(&self, key: &str) -> Error {
        Error::MissingKey {
            at: self.section.location.clone(),
            key: key.to_owned(),
            section: self.section.to_string(),
        }
    }

    /// A string value as written.
    pub fn string(&self, key: &str) -> Option<String> {
        self.line(key).map(|kv| kv.value.clone())
    }

    /// A boolean value.
    pub fn bool(&self, key: &str) -> Result<Option<bool>> {
        self.get(key, parse_bool)
    }

    /// A value parsed with its type's `FromStr`.
    pub fn parsed<T: FromStr<Err = String>>(&self, key: &str) -> Result<Option<T>> {
        self.get(key, str::parse::<T>)
    }

    /// A signed integer value.
    pub fn integer(&self, key: &str) -> Result<Option<i64>> {
        self.get(key, parse_integer)
    }

    /// A non-negative integer value.
    pub fn count(&self, key: &str) -> Result<Option<u64>> {
        self.get(key, parse_count)
    }

    /// A path; `~` is expanded and an empty value counts as absent, which is
    /// what ZODB does with an empty `blob-dir`.
    pub fn path(&self, key: &str) -> Option<PathBuf> {
        self.line(key)
            .filter(|kv| !kv.value.trim().is_empty())
            .map(|kv| expand_user(kv.value.trim()))
    }

    /// The checked subsections, in order.
    pub fn children(&self) -> &[&'a Section] {
        &self.children
    }

    /// At most one subsection of `type_name`.
    pub fn single_child(&self, type_name: &str) -> Result<Option<&'a Section>> {
        let mut found: Option<&'a Section> = None;
        for child in self.children.iter().filter(|c| c.type_name == type_name) {
            if let Some(first) = found {
                return Err(Error::DuplicateSection {
                    at: child.location.clone(),
                    section_type: type_name.to_owned(),
                    parent: self.section.to_string(),
                    first: first.location.clone(),
                });
            }
            found = Some(child);
        }
        Ok(found)
    }
}

/// Converts one line's value, wrapping a failure with the key and location.
pub(crate) fn convert_line<T>(
    kv: &KeyValue,
    convert: &impl Fn(&str) -> Result<T, String>,
) -> Result<T> {
    convert(&kv.value).map_err(|reason| Error::InvalidValue {
        at: kv.location.clone(),
        key: kv.key.clone(),
        value: kv.value.clone(),
        reason,
    })
}
