//! Calendar date and time of a Unix time stamp, in UTC: what `last_updated` and release ids
//! print. (Howard Hinnant's days-to-civil algorithm; no time-zone database needed.)

/// `(year, month, day, hour, minute, second)` of `secs` seconds since 1970-01-01 UTC.
pub fn utc(secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_dates() {
        assert_eq!(super::utc(0), (1970, 1, 1, 0, 0, 0));
        // 2024-02-29 12:34:56 UTC: a leap day.
        assert_eq!(super::utc(1_709_210_096), (2024, 2, 29, 12, 34, 56));
        assert_eq!(super::utc(-1), (1969, 12, 31, 23, 59, 59));
    }
}
