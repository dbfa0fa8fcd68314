//! Calendar dates without a time zone.
//!
//! The core never guesses the user's time zone: the app passes local dates (a check-in's day, a
//! commitment's occurrence) and, for weekly views, the offset to apply to stored instants.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// A day in the proleptic Gregorian calendar, stored as days since 1970-01-01.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct LocalDate(i32);

impl LocalDate {
    /// Builds a date from year, month (1–12) and day (1–31), checking it exists.
    pub fn from_ymd(y: i32, m: u32, d: u32) -> Result<Self, Error> {
        if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) || !(1..=9999).contains(&y) {
            return Err(Error::Invalid(format!(
                "no such date: {y:04}-{m:02}-{d:02}"
            )));
        }
        Ok(Self(days_from_civil(y, m, d)))
    }

    /// The date at `unix_ms` in a zone `offset_minutes` east of UTC.
    pub fn from_unix_ms(unix_ms: i64, offset_minutes: i32) -> Self {
        let local = unix_ms + i64::from(offset_minutes) * 60_000;
        Self(local.div_euclid(86_400_000) as i32)
    }

    /// Days since 1970-01-01.
    pub fn days(self) -> i32 {
        self.0
    }

    /// The date `n` days later (or earlier for negative `n`).
    pub fn add_days(self, n: i32) -> Self {
        Self(self.0 + n)
    }

    /// 0 = Monday … 6 = Sunday.
    pub fn weekday(self) -> u32 {
        // 1970-01-01 was a Thursday (3).
        (self.0 + 3).rem_euclid(7) as u32
    }

    /// The Monday starting this date's week.
    pub fn week_start(self) -> Self {
        Self(self.0 - self.weekday() as i32)
    }

    /// (year, month, day).
    pub fn ymd(self) -> (i32, u32, u32) {
        civil_from_days(self.0)
    }
}

impl fmt::Display for LocalDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl FromStr for LocalDate {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || {
            Error::Invalid(format!(
                "not a date (want YYYY-MM-DD): {:?}",
                crate::ids::truncate(s)
            ))
        };
        let mut parts = s.trim().splitn(3, '-');
        let y = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let m = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let d = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        Self::from_ymd(y, m, d)
    }
}

impl Serialize for LocalDate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LocalDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn is_leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

// Howard Hinnant's civil-date algorithms.
fn days_from_civil(y: i32, m: u32, d: u32) -> i32 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i32;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i32 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i32) -> (i32, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_weekdays() -> Result<(), Error> {
        let d: LocalDate = "2026-11-24".parse()?;
        assert_eq!(d.to_string(), "2026-11-24");
        assert_eq!(d.weekday(), 1, "2026-11-24 is a Tuesday");
        assert_eq!(d.week_start().to_string(), "2026-11-23");
        assert_eq!(LocalDate::from_ymd(1970, 1, 1)?.days(), 0);
        assert_eq!(
            "2024-02-29".parse::<LocalDate>()?.add_days(1).to_string(),
            "2024-03-01"
        );
        assert!("2023-02-29".parse::<LocalDate>().is_err());
        assert!("yesterday".parse::<LocalDate>().is_err());
        for days in -700_000..2_900_000 {
            if days % 997 != 0 {
                continue;
            }
            let d = LocalDate(days);
            let (y, m, dd) = d.ymd();
            assert_eq!(LocalDate::from_ymd(y, m, dd)?.days(), days);
        }
        Ok(())
    }

    #[test]
    fn unix_ms_respects_offset() {
        // 2026-11-24T23:30Z is already the 25th in UTC+1.
        let ms = 1_795_995_000_000 + 84_600_000 - 1_795_995_000_000 % 86_400_000;
        let utc = LocalDate::from_unix_ms(ms, 0);
        let east = LocalDate::from_unix_ms(ms, 60);
        assert_eq!(east.days(), utc.days() + 1);
    }
}
