//! Reading mend-core's small enums from the command line in kebab-case or snake_case.
//!
//! The core stores `not_now`; a person types `not-now`. Both are accepted, and a wrong value
//! gets the list of right ones in kebab-case.

use std::{ffi::OsStr, fmt::Display};

use clap::{Arg, Command, builder::TypedValueParser, error::ErrorKind};

/// Parses one of `all` (every known value of a core enum, `Unknown` excluded).
#[derive(Clone, Copy, Debug)]
pub struct Choice<T: 'static> {
    all: &'static [T],
}

impl<T: Copy + Display + Send + Sync + 'static> Choice<T> {
    /// A parser for the values in `all`.
    pub fn new(all: &'static [T]) -> Self {
        Self { all }
    }

    /// The value written as `s`, or a message listing the accepted spellings.
    pub fn parse_str(&self, s: &str) -> Result<T, String> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        self.all
            .iter()
            .copied()
            .find(|v| v.to_string() == norm)
            .ok_or_else(|| {
                format!(
                    "{:?} is not one of: {}",
                    truncate(s),
                    self.names().join(", ")
                )
            })
    }

    fn names(&self) -> Vec<String> {
        self.all.iter().map(|v| kebab(*v)).collect()
    }
}

/// A core enum value as the user writes it.
pub fn kebab(v: impl Display) -> String {
    v.to_string().replace('_', "-")
}

/// Shortens input before it is echoed back.
pub fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

impl<T: Copy + Display + Send + Sync + 'static> TypedValueParser for Choice<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &Command,
        _arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let s = value.to_str().ok_or_else(|| {
            clap::Error::raw(ErrorKind::InvalidUtf8, "a value is not valid UTF-8\n").with_cmd(cmd)
        })?;
        self.parse_str(s)
            .map_err(|m| clap::Error::raw(ErrorKind::InvalidValue, format!("{m}\n")).with_cmd(cmd))
    }
}

#[cfg(test)]
mod tests {
    use mend_core::model::{NeedKind, QuestionStatus};

    use super::*;

    #[test]
    fn kebab_and_snake_case_both_read() {
        let status = Choice::new(QuestionStatus::ALL);
        assert_eq!(status.parse_str("not-now"), Ok(QuestionStatus::NotNow));
        assert_eq!(status.parse_str("NOT_NOW"), Ok(QuestionStatus::NotNow));
        let wrong = Choice::new(NeedKind::ALL)
            .parse_str("bogus")
            .err()
            .unwrap_or_default();
        assert!(
            wrong.contains("alone-time") && !wrong.contains("unknown"),
            "{wrong}"
        );
    }
}
