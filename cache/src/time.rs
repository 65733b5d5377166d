//! RFC 3339 timestamps in UTC, without a date library: what Go's GOCACHEPROG protocol and
//! OCI image configs both want.

/// `2023-11-14T22:13:20Z`, or with `nanos`, `2023-11-14T22:13:20.123456789Z`.
pub fn rfc3339(unix_secs: i64, nanos: Option<u32>) -> String {
    let (days, day_secs) = (unix_secs.div_euclid(86_400), unix_secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (day_secs / 3600, day_secs / 60 % 60, day_secs % 60);
    let frac = nanos.map(|n| format!(".{n:09}")).unwrap_or_default();
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}{frac}Z")
}

/// The proleptic Gregorian date of a count of days since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0, None), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400, None), "2000-02-29T00:00:00Z");
        assert_eq!(
            rfc3339(1_700_000_000, Some(5)),
            "2023-11-14T22:13:20.000000005Z"
        );
    }
}
