//! Meta's Graph API versions and the dates Meta publishes for their end ("Available Until" in the
//! Graph API changelog), so that the gateway can warn before the version in the file expires.
//! After its date, Meta serves a call to an expired version as if made to the oldest one left.

use std::time::{Duration, SystemTime};

/// Each version the table knows, newest first, with its published end date (`None` while Meta
/// says "TBD"). From developers.facebook.com/docs/graph-api/changelog/versions, 2026-12.
const VERSIONS: &[(u32, &str, Option<&str>)] = &[
    (26, "2026-07-29", None),
    (25, "2026-02-18", Some("2028-07-29")),
    (24, "2025-10-08", Some("2028-02-18")),
    (23, "2025-05-29", Some("2027-10-08")),
    (22, "2025-01-21", Some("2027-05-20")),
    (21, "2024-10-02", Some("2027-01-21")),
    (20, "2024-05-21", Some("2026-09-24")),
    (19, "2024-01-23", Some("2026-05-21")),
    (18, "2023-09-12", Some("2026-01-26")),
    (17, "2023-05-23", Some("2025-09-12")),
    (16, "2023-02-02", Some("2025-05-14")),
];

/// The newest version the table knows, the one to move to.
pub const NEWEST: &str = "v26.0";

/// What the table says about one version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Availability {
    /// Available until this day (00:00 UTC); expired from then on.
    Until(&'static str),
    /// Released, with no end date published yet.
    NotAnnounced,
    /// Older than every version in the table: every one of those expired before 2025-05-14.
    Retired,
    /// Newer than the table, or not a version of the form vMAJOR.MINOR: nothing is known.
    Unknown,
}

impl Availability {
    /// The end date as Unix seconds, when one is known.
    pub fn expires_at(self) -> Option<i64> {
        match self {
            Availability::Until(day) => Some(unix_seconds(day)),
            _ => None,
        }
    }

    /// Whether the version can no longer be called as itself at `now`.
    pub fn is_expired(self, now: SystemTime) -> bool {
        match self {
            Availability::Until(day) => now_seconds(now) >= unix_seconds(day),
            Availability::Retired => true,
            Availability::NotAnnounced | Availability::Unknown => false,
        }
    }
}

/// What the table says about `version` (`v23.0`). Meta only ever publishes minor `.0`.
pub fn availability(version: &str) -> Availability {
    let Some((major, minor)) = version.strip_prefix('v').and_then(|r| r.split_once('.')) else {
        return Availability::Unknown;
    };
    let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) else {
        return Availability::Unknown;
    };
    let oldest = VERSIONS.last().map_or(0, |v| v.0);
    match VERSIONS.iter().find(|v| v.0 == major) {
        Some((_, _, Some(until))) if minor == 0 => Availability::Until(until),
        Some((_, _, None)) if minor == 0 => Availability::NotAnnounced,
        None if major < oldest => Availability::Retired,
        _ => Availability::Unknown,
    }
}

/// A warning about `version` at `now`: expired, or expiring within `within`; `None` otherwise.
pub fn expiry_warning(version: &str, now: SystemTime, within: Duration) -> Option<String> {
    let a = availability(version);
    let move_to = format!("set meta.api_version to {NEWEST}, the newest this gateway knows");
    match a {
        Availability::Retired => Some(format!(
            "Graph API {version} has expired (every version before v16.0 ended by 2025-05-14); \
             Meta serves its calls as the oldest version still available: {move_to}"
        )),
        Availability::Until(day) if a.is_expired(now) => Some(format!(
            "Graph API {version} expired on {day}; Meta serves its calls as the oldest version \
             still available: {move_to}"
        )),
        Availability::Until(day) => {
            let left = unix_seconds(day) - now_seconds(now);
            (left <= within.as_secs() as i64).then(|| {
                format!(
                    "Graph API {version} expires on {day}, in {} days: {move_to}",
                    left.div_euclid(86_400)
                )
            })
        }
        Availability::NotAnnounced | Availability::Unknown => None,
    }
}

fn unix_seconds(day: &str) -> i64 {
    let t = humantime::parse_rfc3339(&format!("{day}T00:00:00Z"))
        .expect("the table's dates are YYYY-MM-DD");
    now_seconds(t)
}

fn now_seconds(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: &str) -> SystemTime {
        humantime::parse_rfc3339(&format!("{day}T12:00:00Z")).unwrap()
    }

    #[test]
    fn the_table_answers_for_every_kind_of_version() {
        assert_eq!(availability("v23.0"), Availability::Until("2027-10-08"));
        assert_eq!(availability("v26.0"), Availability::NotAnnounced);
        assert_eq!(availability("v15.0"), Availability::Retired);
        assert_eq!(availability("v3.2"), Availability::Retired);
        assert_eq!(availability("v27.0"), Availability::Unknown);
        assert_eq!(availability("v23.1"), Availability::Unknown);
        assert_eq!(availability("23.0"), Availability::Unknown);
        assert_eq!(
            availability("v23.0").expires_at(),
            Some(1_822_953_600),
            "2027-10-08T00:00:00Z"
        );
        assert!(VERSIONS.windows(2).all(|w| w[0].0 == w[1].0 + 1));
        assert_eq!(format!("v{}.0", VERSIONS[0].0), NEWEST);
    }

    #[test]
    fn warns_within_the_horizon_and_once_expired() {
        let quarter = Duration::from_secs(90 * 86_400);
        assert_eq!(
            expiry_warning("v23.0", at("2026-12-04"), quarter),
            None,
            "ten months left"
        );
        let soon = expiry_warning("v21.0", at("2026-12-04"), quarter).unwrap();
        assert!(
            soon.contains("expires on 2027-01-21, in 47 days") && soon.contains("v26.0"),
            "{soon}"
        );
        let gone = expiry_warning("v20.0", at("2026-12-04"), Duration::ZERO).unwrap();
        assert!(gone.contains("expired on 2026-09-24"), "{gone}");
        assert!(expiry_warning("v12.0", at("2026-12-04"), Duration::ZERO).is_some());
        assert_eq!(expiry_warning("v26.0", at("2026-12-04"), quarter), None);
        assert_eq!(
            expiry_warning("v21.0", at("2026-12-04"), Duration::ZERO),
            None,
            "not expired yet"
        );
    }
}
