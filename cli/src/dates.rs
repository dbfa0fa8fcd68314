//! Dates as the command line takes them, and "today".
//!
//! "Today" and weeks follow the couple's calendar: the zone in `MEND_TZ` (an IANA name), else
//! this machine's, and weeks from `MEND_WEEK_START` (Monday by default), as `mend --help` says.

use mend_core::{Calendar, LocalDate, Weekday};

use crate::failure::Failure;

/// The calendar from `MEND_TZ` and `MEND_WEEK_START`, else this machine's zone and Monday.
pub fn calendar() -> Result<Calendar, Failure> {
    let week = match std::env::var("MEND_WEEK_START") {
        Ok(day) if !day.trim().is_empty() => {
            Weekday::parse(&day).map_err(|e| Failure::input(format!("MEND_WEEK_START: {e}")))?
        }
        _ => Weekday::Monday,
    };
    match std::env::var("MEND_TZ") {
        Ok(zone) if !zone.trim().is_empty() => {
            Calendar::new(&zone, week).map_err(|e| Failure::input(format!("MEND_TZ: {e}")))
        }
        _ => Ok(Calendar::system(week)),
    }
}

/// An instant as `YYYY-MM-DD HH:MM` in the couple's zone.
pub fn local_instant(calendar: &Calendar, unix_ms: i64) -> String {
    let shifted = unix_ms + i64::from(calendar.offset_minutes(unix_ms)) * 60_000;
    instant(shifted)
}

/// A `YYYY-MM-DD` argument.
pub fn parse(s: &str) -> Result<LocalDate, Failure> {
    s.parse()
        .map_err(|e: mend_core::Error| Failure::input(e.to_string()))
}

/// A date argument, or `today`.
pub fn or_today(s: Option<&str>, today: LocalDate) -> Result<LocalDate, Failure> {
    s.map_or_else(|| Ok(today), parse)
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
