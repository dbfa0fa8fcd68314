//! The couple's calendar: an IANA time zone and the day weeks start on.
//!
//! "Today", a check-in's date and week boundaries all follow it, so a check-in written at 23:30
//! in Sydney belongs to Sydney's day, not UTC's. Zones come from the platform's tz database
//! (iOS, Android and Linux ship one), with jiff's bundled copy where a platform has none.

use std::fmt;

use jiff::{Timestamp, tz::TimeZone};
use serde::{Deserialize, Serialize};

use crate::{
    date::LocalDate,
    error::{Error, Result},
};

/// A day of the week.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Weekday {
    /// The default first day of a week (ISO 8601).
    #[default]
    Monday,
    /// Tuesday.
    Tuesday,
    /// Wednesday.
    Wednesday,
    /// Thursday.
    Thursday,
    /// Friday.
    Friday,
    /// Saturday.
    Saturday,
    /// Sunday.
    Sunday,
}

impl Weekday {
    /// 0 = Monday … 6 = Sunday.
    pub fn index(self) -> u32 {
        self as u32
    }

    /// Reads `monday` … `sunday` (any case).
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "monday" | "mon" => Self::Monday,
            "tuesday" | "tue" => Self::Tuesday,
            "wednesday" | "wed" => Self::Wednesday,
            "thursday" | "thu" => Self::Thursday,
            "friday" | "fri" => Self::Friday,
            "saturday" | "sat" => Self::Saturday,
            "sunday" | "sun" => Self::Sunday,
            _ => {
                return Err(Error::Invalid(
                    "a week starts on a day from monday to sunday".into(),
                ));
            }
        })
    }
}

/// A time zone and a first day of the week.
#[derive(Clone)]
pub struct Calendar {
    zone: TimeZone,
    name: String,
    week_starts: Weekday,
}

impl fmt::Debug for Calendar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Calendar")
            .field("zone", &self.name)
            .field("week_starts", &self.week_starts)
            .finish()
    }
}

impl PartialEq for Calendar {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.week_starts == other.week_starts
    }
}

impl Default for Calendar {
    fn default() -> Self {
        Self::utc()
    }
}

impl Calendar {
    /// UTC with weeks starting on Monday: what a journal uses until the app sets its zone.
    pub fn utc() -> Self {
        Self {
            zone: TimeZone::UTC,
            name: "UTC".into(),
            week_starts: Weekday::Monday,
        }
    }

    /// The IANA zone `name` (`Australia/Sydney`), weeks starting on `week_starts`.
    pub fn new(name: &str, week_starts: Weekday) -> Result<Self> {
        let name = name.trim();
        let zone = TimeZone::get(name).map_err(|_| {
            Error::Invalid(format!(
                "unknown time zone {:?} (want an IANA name such as Europe/Paris)",
                crate::ids::truncate(name)
            ))
        })?;
        Ok(Self {
            zone,
            name: name.to_owned(),
            week_starts,
        })
    }

    /// The device's own zone, or UTC when it has none that can be named.
    pub fn system(week_starts: Weekday) -> Self {
        let zone = TimeZone::system();
        match zone.iana_name() {
            Some(name) => Self {
                name: name.to_owned(),
                zone,
                week_starts,
            },
            None => Self {
                week_starts,
                ..Self::utc()
            },
        }
    }

    /// The zone's IANA name.
    pub fn zone_name(&self) -> &str {
        &self.name
    }

    /// The first day of a week.
    pub fn week_starts(&self) -> Weekday {
        self.week_starts
    }

    /// The local date at `unix_ms`.
    pub fn date_of(&self, unix_ms: i64) -> LocalDate {
        match Timestamp::from_millisecond(unix_ms) {
            Ok(ts) => {
                let offset = self.zone.to_offset(ts).seconds();
                LocalDate::from_unix_ms(unix_ms, offset / 60)
            }
            Err(_) => LocalDate::from_unix_ms(unix_ms, 0),
        }
    }

    /// Minutes east of UTC at `unix_ms` (for showing an instant as a local time).
    pub fn offset_minutes(&self, unix_ms: i64) -> i32 {
        Timestamp::from_millisecond(unix_ms)
            .map(|ts| self.zone.to_offset(ts).seconds() / 60)
            .unwrap_or(0)
    }

    /// The first day of the week `date` falls in.
    pub fn week_of(&self, date: LocalDate) -> LocalDate {
        let back = (date.weekday() + 7 - self.week_starts.index()) % 7;
        date.add_days(-(back as i32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_evening_in_sydney_is_already_tomorrow_in_utc_terms() -> Result<()> {
        // 2026-11-24T13:30Z is 2026-11-25 00:30 in Sydney (UTC+11 in summer).
        let ms = i64::from("2026-11-24".parse::<LocalDate>()?.days()) * 86_400_000
            + 13 * 3_600_000
            + 30 * 60_000;
        let sydney = Calendar::new("Australia/Sydney", Weekday::Monday)?;
        assert_eq!(sydney.date_of(ms).to_string(), "2026-11-25");
        assert_eq!(Calendar::utc().date_of(ms).to_string(), "2026-11-24");
        assert_eq!(sydney.offset_minutes(ms), 660);
        Ok(())
    }

    #[test]
    fn weeks_start_on_the_chosen_day() -> Result<()> {
        let tuesday: LocalDate = "2026-11-24".parse()?;
        let monday = Calendar::utc();
        let sunday = Calendar::new("UTC", Weekday::Sunday)?;
        assert_eq!(monday.week_of(tuesday).to_string(), "2026-11-23");
        assert_eq!(sunday.week_of(tuesday).to_string(), "2026-11-22");
        let sun: LocalDate = "2026-11-22".parse()?;
        assert_eq!(sunday.week_of(sun), sun);
        assert_eq!(monday.week_of(sun).to_string(), "2026-11-16");
        Ok(())
    }

    #[test]
    fn unknown_zones_are_refused() {
        assert!(matches!(
            Calendar::new("Mars/Olympus", Weekday::Monday),
            Err(Error::Invalid(_))
        ));
        assert!(Weekday::parse("someday").is_err());
        assert_eq!(Weekday::parse("Sunday").ok(), Some(Weekday::Sunday));
    }
}
