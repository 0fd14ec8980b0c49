//! Injected failures: what the next matching send calls answer instead of accepting.
//! Faults apply to sends only (not mark-read calls), first pushed first used.

use super::error::GraphError;
use serde::{Deserialize, Serialize};

/// The failure a faulted call answers with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// HTTP 500 with code 1 (temporary API error).
    Http500,
    /// HTTP 429 with code 80007, and `Retry-After` when given.
    #[serde(rename = "rate_limit_429")]
    RateLimit429 {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_secs: Option<u64>,
    },
    /// HTTP 400 with code 130429 (throughput exceeded), as Meta answers it.
    #[serde(rename = "throughput_130429")]
    Throughput130429,
    /// HTTP 400 with code 131047 (re-engagement), whatever the window says.
    #[serde(rename = "outside_window_131047")]
    OutsideWindow131047,
    /// HTTP 401 with code 190 (token expired).
    #[serde(rename = "token_expired_190")]
    TokenExpired190,
}

/// A fault to inject: `kind`, for the next `count` send calls (to `phone_number_id` if given).
/// On the control API: `{"kind":"http500","count":2,"phone_number_id":"…","retry_after_secs":5}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    #[serde(flatten)]
    pub kind: FaultKind,
    /// How many calls fail; 1 when absent.
    #[serde(default = "one")]
    pub count: u32,
    /// Only calls for this number fail; any number when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number_id: Option<String>,
}

fn one() -> u32 {
    1
}

impl Fault {
    /// `kind` for the next call to any number.
    pub fn once(kind: FaultKind) -> Self {
        Self {
            kind,
            count: 1,
            phone_number_id: None,
        }
    }

    /// The same fault for the next `count` calls.
    pub fn times(mut self, count: u32) -> Self {
        self.count = count;
        self
    }

    /// The same fault, only for calls to `phone_number_id`.
    pub fn for_number(mut self, phone_number_id: impl Into<String>) -> Self {
        self.phone_number_id = Some(phone_number_id.into());
        self
    }
}

impl FaultKind {
    pub(crate) fn error(&self) -> GraphError {
        match self {
            FaultKind::Http500 => GraphError::unknown_error(),
            FaultKind::RateLimit429 { retry_after_secs } => {
                GraphError::rate_limited(*retry_after_secs)
            }
            FaultKind::Throughput130429 => GraphError::throughput(),
            FaultKind::OutsideWindow131047 => GraphError::re_engagement(),
            FaultKind::TokenExpired190 => GraphError::token_expired(),
        }
    }
}

/// The pushed faults not used up yet.
#[derive(Debug, Default)]
pub(crate) struct Faults(Vec<Fault>);

impl Faults {
    pub fn push(&mut self, fault: Fault) {
        if fault.count > 0 {
            self.0.push(fault);
        }
    }

    /// Uses up one call of the first fault that matches `phone_number_id`.
    pub fn take(&mut self, phone_number_id: &str) -> Option<FaultKind> {
        let i = self.0.iter().position(|f| {
            f.phone_number_id
                .as_deref()
                .is_none_or(|p| p == phone_number_id)
        })?;
        let fault = &mut self.0[i];
        fault.count -= 1;
        let kind = fault.kind.clone();
        if fault.count == 0 {
            self.0.remove(i);
        }
        Some(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_applies_to_exactly_count_matching_calls() {
        let mut faults = Faults::default();
        faults.push(Fault::once(FaultKind::Http500).times(2).for_number("1"));
        faults.push(Fault::once(FaultKind::Throughput130429));
        assert_eq!(faults.take("2"), Some(FaultKind::Throughput130429));
        assert_eq!(faults.take("2"), None);
        assert_eq!(faults.take("1"), Some(FaultKind::Http500));
        assert_eq!(faults.take("1"), Some(FaultKind::Http500));
        assert_eq!(faults.take("1"), None);
    }

    #[test]
    fn wire_form() {
        let f: Fault = serde_json::from_str(
            r#"{"kind":"rate_limit_429","count":3,"phone_number_id":"9","retry_after_secs":7}"#,
        )
        .unwrap();
        assert_eq!(
            f,
            Fault::once(FaultKind::RateLimit429 {
                retry_after_secs: Some(7)
            })
            .times(3)
            .for_number("9")
        );
        let f: Fault = serde_json::from_str(r#"{"kind":"http500"}"#).unwrap();
        assert_eq!(f, Fault::once(FaultKind::Http500));
    }

    #[test]
    fn statuses_as_meta_answers_them() {
        let cases = [
            (FaultKind::Http500, 500, 1),
            (
                FaultKind::RateLimit429 {
                    retry_after_secs: Some(2),
                },
                429,
                80007,
            ),
            (FaultKind::Throughput130429, 400, 130429),
            (FaultKind::OutsideWindow131047, 400, 131047),
            (FaultKind::TokenExpired190, 401, 190),
        ];
        for (kind, status, code) in cases {
            let e = kind.error();
            assert_eq!((e.status.as_u16(), e.code), (status, code), "{kind:?}");
        }
    }
}
