//! The one way settings are read: [`Reader`] takes one key at a time out of a
//! [`Source`] and types it with serde ([`super::values`]). A bad value becomes
//! `section.key: message` and reading goes on, so every problem is reported at once.
//!
//! The reader remembers each key it was asked for: keys present in the configuration
//! that nobody asked for are unknown (there is no separate list of known keys), and the
//! same record is the list of keys the README documents ([`super::known_keys`]).

use super::source::Source;
use super::values::{
    describe, inner_path, type_name, ByteSize, Flag, HumanDuration, List, StringTable, Text,
};
use super::ENV_PREFIX;
use figment::value::Value;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// What a key holds. The README gives tables the default `{}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// A string, number, boolean or list.
    Value,
    /// A table of free-form keys (`oidc.auth_params`).
    Table,
    /// An array of tables, file only (`[[routes]]`).
    TableArray,
}

/// One key's value, or why there is none.
enum Fetched<T> {
    Missing,
    /// Present but unusable; the problem is recorded.
    Invalid,
    Value(T),
}

/// Reads typed values out of a [`Source`], recording every problem and every key asked.
pub(super) struct Reader<'s> {
    source: &'s Source,
    /// Whether a missing required key may suggest its variable (not in `[[routes]]`).
    env_hint: bool,
    errors: Vec<String>,
    asked: BTreeMap<String, KeyKind>,
}

impl<'s> Reader<'s> {
    pub(super) fn new(source: &'s Source) -> Self {
        Reader {
            source,
            env_hint: true,
            errors: Vec::new(),
            asked: BTreeMap::new(),
        }
    }

    /// A reader of one [`Reader::entries`] entry (the environment cannot set those).
    pub(super) fn entry(source: &'s Source) -> Self {
        Reader {
            env_hint: false,
            ..Reader::new(source)
        }
    }

    /// Records `section.key: message`.
    pub(super) fn err(&mut self, section: &str, key: &str, msg: impl fmt::Display) {
        self.errors.push(format!("{section}.{key}: {msg}"));
    }

    /// Records a problem that is not about one key.
    pub(super) fn problem(&mut self, msg: String) {
        self.errors.push(msg);
    }

    /// The problems found and the keys asked for.
    pub(super) fn finish(self) -> (Vec<String>, BTreeMap<String, KeyKind>) {
        (self.errors, self.asked)
    }

    fn find(&mut self, path: String, kind: KeyKind) -> Option<Value> {
        let value = self.source.find(&path);
        self.asked.insert(path, kind);
        value
    }

    /// `section.key` typed as `T`; a value that does not fit is recorded and gives `None`.
    pub(super) fn get<T: DeserializeOwned>(&mut self, section: &str, key: &str) -> Option<T> {
        match self.fetch(section, key, KeyKind::Value) {
            Fetched::Value(v) => Some(v),
            Fetched::Missing | Fetched::Invalid => None,
        }
    }

    fn fetch<T: DeserializeOwned>(
        &mut self,
        section: &str,
        key: &str,
        kind: KeyKind,
    ) -> Fetched<T> {
        let path = format!("{section}.{key}");
        let Some(value) = self.find(path.clone(), kind) else {
            return Fetched::Missing;
        };
        match T::deserialize(&value) {
            Ok(v) => Fetched::Value(v),
            Err(e) => {
                let at = inner_path(&value, &e.path);
                let origin = self.source.origin(&path);
                self.errors
                    .push(format!("{path}{at}: {}{origin}", describe(&e.kind)));
                Fetched::Invalid
            }
        }
    }

    /// A string (a number is taken as its text).
    pub(super) fn string(&mut self, section: &str, key: &str) -> Option<String> {
        self.get::<Text>(section, key).map(|t| t.0)
    }

    /// A non-empty string; when missing, says which variable could set it.
    pub(super) fn required(&mut self, section: &str, key: &str) -> Option<String> {
        match self.string(section, key) {
            Some(s) if !s.trim().is_empty() => Some(s),
            Some(_) => {
                self.err(section, key, "must not be empty");
                None
            }
            None if self.env_hint => {
                let var = env_var(section, key);
                self.err(section, key, format!("is required (or set {var})"));
                None
            }
            None => {
                self.err(section, key, "is required");
                None
            }
        }
    }

    pub(super) fn bool(&mut self, section: &str, key: &str, default: bool) -> bool {
        self.get::<Flag>(section, key).map_or(default, |f| f.0)
    }

    /// A duration like `30s`, `10m` or `12h`, greater than zero (1s stands in on error).
    pub(super) fn duration(&mut self, section: &str, key: &str, default: &str) -> Duration {
        let parsed = match self.fetch::<HumanDuration>(section, key, KeyKind::Value) {
            Fetched::Value(d) => d.0,
            Fetched::Invalid => return Duration::from_secs(1),
            Fetched::Missing => {
                humantime::parse_duration(default).expect("defaults are valid durations")
            }
        };
        if parsed.is_zero() {
            self.err(section, key, "must be greater than zero");
            return Duration::from_secs(1);
        }
        parsed
    }

    /// A size in bytes (`65536`, `512KiB`, `10MiB`), greater than zero (1 stands in on
    /// error).
    pub(super) fn byte_size(&mut self, section: &str, key: &str, default: &str) -> u64 {
        let parsed = match self.fetch::<ByteSize>(section, key, KeyKind::Value) {
            Fetched::Value(b) => b.0,
            Fetched::Invalid => return 1,
            Fetched::Missing => ByteSize::parse(default).expect("defaults are valid sizes"),
        };
        if parsed == 0 {
            self.err(section, key, "must be greater than zero");
            return 1;
        }
        parsed
    }

    /// A whole number (`default` when missing; recorded and `default` when not one).
    pub(super) fn count(&mut self, section: &str, key: &str, default: u64) -> u64 {
        match self.string(section, key) {
            None => default,
            Some(raw) => match raw.trim().parse() {
                Ok(n) => n,
                Err(_) => {
                    self.err(section, key, format!("{raw:?} is not a whole number"));
                    default
                }
            },
        }
    }

    /// A list: a TOML array of strings, or one string of items separated by spaces or commas.
    pub(super) fn list(&mut self, section: &str, key: &str) -> Option<Vec<String>> {
        self.get::<List>(section, key).map(|l| l.0)
    }

    /// A table of free-form keys whose values are strings (numbers and booleans as text).
    pub(super) fn table(&mut self, section: &str, key: &str) -> BTreeMap<String, String> {
        match self.fetch::<StringTable>(section, key, KeyKind::Table) {
            Fetched::Value(t) => t.0,
            Fetched::Missing | Fetched::Invalid => BTreeMap::new(),
        }
    }

    /// The entries of an array of tables (`[[routes]]`), each a source of its own whose
    /// one section is `key[i]`.
    pub(super) fn entries(&mut self, key: &str) -> Vec<(String, Source)> {
        let items = match self.find(key.to_string(), KeyKind::TableArray) {
            None => return Vec::new(),
            Some(Value::Array(_, items)) => items,
            Some(other) => {
                let (kind, origin) = (type_name(&other.to_actual()), self.source.origin(key));
                self.problem(format!(
                    "{key}: expected an array of tables ([[{key}]]), got {kind}{origin}"
                ));
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let section = format!("{key}[{i}]");
            match item {
                Value::Dict(..) => out.push((section.clone(), Source::entry(&section, item))),
                other => self.problem(format!(
                    "{section}: expected a table, got {}",
                    type_name(&other.to_actual())
                )),
            }
        }
        out
    }

    /// Takes over the problems found by a reader of one entry.
    pub(super) fn absorb(&mut self, entry: Reader<'_>) {
        self.errors.extend(entry.errors);
    }

    /// Every section and key present that was never asked for is unknown.
    pub(super) fn report_unknown_keys(&mut self) {
        let root = self.source.root();
        for (section, value) in root {
            if self.asked.contains_key(&section) {
                continue; // a top-level key of its own, read as a whole (`routes`)
            }
            let below = format!("{section}.");
            let origin = self.source.origin(&section);
            if !self.asked.keys().any(|k| k.starts_with(&below)) {
                self.problem(format!("{section}: unknown section{origin}"));
                continue;
            }
            let Value::Dict(_, keys) = value else {
                let kind = type_name(&value.to_actual());
                self.problem(format!("{section}: expected a table, got {kind}{origin}"));
                continue;
            };
            for key in keys.keys() {
                let path = format!("{section}.{key}");
                if !self.asked.contains_key(&path) {
                    let origin = self.source.origin(&path);
                    self.problem(format!("{path}: unknown key{origin}"));
                }
            }
        }
    }
}

/// The variable that sets `section.key`: `SPA_BFF__SECTION__KEY`.
pub(super) fn env_var(section: &str, key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}__{}",
        section.to_uppercase(),
        key.to_uppercase()
    )
}
