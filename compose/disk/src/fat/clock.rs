//! The one timestamp every FAT entry gets.
//!
//! fatfs stamps directory entries from a [`TimeProvider`] when it creates
//! them (there is no way to set a directory's times afterwards), and by
//! default that is the host's local time. [`EpochClock`] always answers
//! with the build epoch instead, converted to FAT's (zone-less) calendar
//! fields as UTC: a fixed zone is the only reproducible choice, and Linux
//! reads the fields back as UTC when the kernel's zone is UTC (the default
//! unless userspace sets one, or with the vfat `tz=UTC` mount option).

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use fatfs::{Date, DateTime, Time, TimeProvider};

/// 1980-01-01 00:00:00 UTC, the earliest FAT time.
pub const FAT_MIN_EPOCH: u64 = 315_532_800;
/// 2107-12-31 23:59:58 UTC, the latest FAT time (2-second resolution).
pub const FAT_MAX_EPOCH: u64 = 4_354_819_198;

#[derive(Debug)]
pub struct EpochClock {
    at: DateTime,
}

impl TimeProvider for EpochClock {
    fn get_current_date(&self) -> Date {
        self.at.date
    }

    fn get_current_date_time(&self) -> DateTime {
        self.at
    }
}

/// The clock for `epoch` (seconds since 1970, UTC), clamped to what FAT can
/// store: an epoch of 0, common as a `SOURCE_DATE_EPOCH` default, becomes
/// 1980-01-01 as with mkfs.fat and mtools.
///
/// fatfs 0.3 takes the provider as `&'static dyn TimeProvider`, so clocks
/// are leaked, once per distinct epoch, and reused; a build uses one epoch,
/// so this is a few bytes per process.
pub fn clock_for(epoch: u64) -> &'static EpochClock {
    static CLOCKS: OnceLock<Mutex<BTreeMap<u64, &'static EpochClock>>> = OnceLock::new();
    let t = epoch.clamp(FAT_MIN_EPOCH, FAT_MAX_EPOCH);
    let mut clocks = CLOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    clocks.entry(t).or_insert_with(|| {
        Box::leak(Box::new(EpochClock {
            at: fat_date_time(t),
        }))
    })
}

/// Seconds since 1970 (already within FAT's range) to calendar fields.
pub fn fat_date_time(t: u64) -> DateTime {
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    let (year, month, day) = civil_from_days(days);
    DateTime {
        date: Date {
            year: year as u16,
            month: month as u16,
            day: day as u16,
        },
        time: Time {
            hour: (secs / 3600) as u16,
            min: (secs / 60 % 60) as u16,
            sec: (secs % 60) as u16,
            millis: 0,
        },
    }
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to
/// (year, month 1..=12, day 1..=31) in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ymdhms(t: u64) -> (u16, u16, u16, u16, u16, u16) {
        let d = fat_date_time(t);
        (
            d.date.year,
            d.date.month,
            d.date.day,
            d.time.hour,
            d.time.min,
            d.time.sec,
        )
    }

    #[test]
    fn epochs_convert_to_utc_calendar_fields() {
        assert_eq!(ymdhms(FAT_MIN_EPOCH), (1980, 1, 1, 0, 0, 0));
        // `date -u -d @1700000000`: 2023-11-14 22:13:20
        assert_eq!(ymdhms(1_700_000_000), (2023, 11, 14, 22, 13, 20));
        // A leap day.
        assert_eq!(ymdhms(951_782_400), (2000, 2, 29, 0, 0, 0));
        assert_eq!(ymdhms(FAT_MAX_EPOCH), (2107, 12, 31, 23, 59, 58));
    }

    #[test]
    fn clocks_clamp_and_are_shared() {
        assert_eq!(
            clock_for(0).get_current_date_time(),
            fat_date_time(FAT_MIN_EPOCH)
        );
        assert!(std::ptr::eq(clock_for(0), clock_for(1)));
        assert_eq!(
            clock_for(u64::MAX).get_current_date_time(),
            fat_date_time(FAT_MAX_EPOCH)
        );
    }
}
