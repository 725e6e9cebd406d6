//! Small text helpers shared by pages, mail and the command line: how times
//! and sizes are shown, and how customers' typed answers are normalised.
//! A leaf: it imports nothing from the crate.

/// A unix time for people (UTC, minute precision), as pages and mail show it.
pub fn format_time(unix: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| "?".to_owned())
}

/// A unix time as RFC 3339, for machine-readable command-line output.
pub fn format_time_rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// A byte count in decimal units ("1.5 MB"), as file lists show it.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["bytes", "KB", "MB", "GB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Case, spaces and dashes do not matter when a customer types a fact.
pub fn normalise_fact(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Spaces and dashes do not matter when a customer types an access code
/// ("2145 9905", "21459905"). Eight digits come back grouped as generated
/// codes are printed ("2145-9905"), so generated codes hashed before this
/// normalisation existed still verify. Case does matter.
pub fn normalise_access_code(s: &str) -> String {
    let bare: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && !is_dash(*c))
        .collect();
    if bare.len() == 8 && bare.bytes().all(|b| b.is_ascii_digit()) {
        format!("{}-{}", &bare[..4], &bare[4..])
    } else {
        bare
    }
}

/// The hyphen and the dashes a phone keyboard or word processor puts in
/// its place.
fn is_dash(c: char) -> bool {
    matches!(c, '-' | '\u{2010}'..='\u{2015}' | '\u{2212}')
}

/// The one of `all` whose stored name is `s`: how enums that list their
/// variants in an `ALL` array parse.
pub fn by_name<T: Copy>(all: &[T], name: fn(T) -> &'static str, s: &str) -> Option<T> {
    all.iter().copied().find(|&x| name(x) == s)
}

/// Seconds in a span typed on a command line: a whole number of days,
/// hours or minutes (`30d`, `12h`, `90m`), at most ten years.
pub fn parse_span(s: &str) -> Option<i64> {
    let s = s.trim();
    let unit = match s.chars().last()? {
        'd' => 86_400,
        'h' => 3_600,
        'm' => 60,
        _ => return None,
    };
    let n: i64 = s[..s.len() - 1].parse().ok()?;
    let secs = n.checked_mul(unit)?;
    (n > 0 && secs <= 3_650 * 86_400).then_some(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans() {
        assert_eq!(parse_span("30d"), Some(30 * 86_400));
        assert_eq!(parse_span(" 12h"), Some(12 * 3_600));
        assert_eq!(parse_span("90m"), Some(5_400));
        for bad in ["", "d", "0d", "-1d", "7", "7w", "1.5d", "99999d", "1e3d"] {
            assert_eq!(parse_span(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn facts_ignore_case_spaces_and_dashes() {
        assert_eq!(normalise_fact(" 12-34 AB "), "1234ab");
    }

    #[test]
    fn access_codes_ignore_spaces_and_dashes() {
        for typed in [
            "2145-9905",
            "21459905",
            " 2145 9905 ",
            "2145 - 9905",
            "2145\u{2013}9905",
        ] {
            assert_eq!(normalise_access_code(typed), "2145-9905", "{typed:?}");
        }
        assert_eq!(normalise_access_code("Open-Sesame 1"), "OpenSesame1");
        assert_eq!(normalise_access_code("open-sesame-1"), "opensesame1");
        assert_eq!(normalise_access_code("214599051"), "214599051");
        assert_eq!(normalise_access_code(" - "), "");
    }

    #[test]
    fn times_and_sizes() {
        assert_eq!(format_time(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_time_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(human_size(999), "999 bytes");
        assert_eq!(human_size(1_500_000), "1.5 MB");
    }
}
