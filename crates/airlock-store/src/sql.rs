//! A small statement builder for dynamic filters that only ever appends placeholders.
//!
//! sqlx's `QueryBuilder` writes `?` for the `Any` driver, which Postgres does not accept, so this
//! builder numbers placeholders itself (`$1`, `$2`, …), which both databases accept.

use sqlx::any::AnyArguments;
use sqlx::{Any, Arguments, Encode, Type};

pub(crate) struct Sql {
    text: String,
    args: AnyArguments<'static>,
    count: usize,
    /// Plain `?` placeholders instead of `$N`.
    positional: bool,
}

impl Sql {
    pub(crate) fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            args: AnyArguments::default(),
            count: 0,
            positional: false,
        }
    }

    /// For statements with many placeholders (multi-row inserts). sqlx binds SQLite's `$N`
    /// parameters in time quadratic in their number (it looks each name up by index, and SQLite
    /// scans its list for that), but plain `?` in linear time; Postgres accepts only `$N`.
    pub(crate) fn many(backend: crate::Backend, text: &str) -> Self {
        Self {
            positional: backend == crate::Backend::Sqlite,
            ..Self::new(text)
        }
    }

    /// Appends literal SQL written in the code (never user input).
    pub(crate) fn push(&mut self, text: &'static str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder bound to `value`.
    pub(crate) fn bind<T>(&mut self, value: T) -> &mut Self
    where
        T: 'static + Send + Encode<'static, Any> + Type<Any>,
    {
        self.count += 1;
        if self.positional {
            self.text.push('?');
        } else {
            self.text.push('$');
            self.text.push_str(&self.count.to_string());
        }
        // Encoding into AnyArguments only fails for types the Any driver lacks, which the
        // store never binds.
        let _ = self.args.add(value);
        self
    }

    pub(crate) fn build(self) -> (String, AnyArguments<'static>) {
        (self.text, self.args)
    }
}

/// Escapes `%`, `_` and `\` for a `LIKE … ESCAPE '\'` pattern and wraps it in `%…%`, lower-cased.
pub(crate) fn contains_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}
