//! Dates as the command line takes them, and "today".
//!
//! mend-core never guesses a time zone. The CLI takes today as the date in UTC, which is
//! documented in `mend --help`; anyone for whom that is the wrong day passes `--date`.

use std::time::{SystemTime, UNIX_EPOCH};

use mend_core::LocalDate;

use crate::failure::Failure;

/// Now, in unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Today's date in UTC.
pub fn today() -> LocalDate {
    LocalDate::from_unix_ms(now_ms(), 0)
}

/// A `YYYY-MM-DD` argument.
pub fn parse(s: &str) -> Result<LocalDate, Failure> {
    s.parse()
        .map_err(|e: mend_core::Error| Failure::input(e.to_string()))
}

/// A date argument, or today.
pub fn or_today(s: Option<&str>) -> Result<LocalDate, Failure> {
    s.map_or_else(|| Ok(today()), parse)
}

/// A stored instant as `YYYY-MM-DD HH:MM` (UTC).
pub fn instant(unix_ms: i64) -> String {
    let date = LocalDate::from_unix_ms(unix_ms, 0);
    let minutes = unix_ms.rem_euclid(86_400_000) / 60_000;
    format!("{date} {:02}:{:02}", minutes / 60, minutes % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_show_in_utc_and_bad_dates_are_input_errors() {
        assert_eq!(instant(1_795_000_000_000), "2026-11-18 11:06");
        assert_eq!(
            parse("2026-02-30").map_err(|f| f.exit),
            Err(crate::failure::Exit::Input)
        );
    }
}
