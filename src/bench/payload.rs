//! What the bench sends: Cloud API `messages` envelopes with unique wamids and unique texts that
//! carry the message's sequence number and send time, so a reply identifies its message alone.
//! Built by formatting (every field is digits or hex, nothing needs escaping): no JSON tree.

use std::fmt::Write;

/// One business number the bench writes to.
#[derive(Clone, Debug)]
pub struct Number {
    pub phone_number_id: String,
    pub waba_id: String,
    pub display_phone_number: String,
}

/// One customer message in a webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The bench-wide sequence number of the message, from 0.
    pub seq: u64,
    /// Index of the customer in the pool.
    pub customer: u32,
    /// Unix microseconds at which the message was (meant to be) sent.
    pub sent_us: u64,
}

/// Names and texts of one run; `run` keeps replies from another run apart.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub id: u32,
}

impl Run {
    /// The customer's wa_id: digits, as Meta gives it.
    pub fn wa_id(self, customer: u32) -> String {
        format!("99{customer:010}")
    }

    /// A wamid shaped like Meta's, unique per run and message. Meta's ids do not follow one
    /// another (they encode the customer's number, then a random id), so neither do these: the
    /// sequence number is scrambled by a bijection (SplitMix64's finaliser: each step is
    /// invertible). Ids in sending order would let the gateway's index of inbound wamids grow at
    /// its end only, where Meta's take a random page of it per message.
    pub fn wamid(self, seq: u64) -> String {
        let mut z = seq;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        format!("wamid.HBgLBENCH{:08X}{z:016X}", self.id)
    }

    /// The message text: `bench-<run>-<seq>-<sent_us>`; the echo agent sends it back prefixed.
    pub fn text(self, m: &Message) -> String {
        format!("bench-{:08x}-{}-{}", self.id, m.seq, m.sent_us)
    }

    /// Finds this run's marker in a reply text: `(seq, sent_us)`, or `None` for a foreign text.
    pub fn parse_reply(self, reply: &str) -> Option<(u64, u64)> {
        let marker = format!("bench-{:08x}-", self.id);
        let rest = &reply[reply.find(&marker)? + marker.len()..];
        let mut parts = rest.split('-');
        let seq = parts.next()?.parse().ok()?;
        let digits: &str = parts.next()?;
        let end = digits
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(digits.len());
        let sent_us = digits[..end].parse().ok()?;
        Some((seq, sent_us))
    }

    /// The signed body of one webhook: every message in one `messages` change of `number`.
    pub fn envelope(self, number: &Number, messages: &[Message]) -> String {
        let mut out = String::with_capacity(400 + messages.len() * 260);
        let _ = write!(
            out,
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"{}","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"{}","phone_number_id":"{}"}},"contacts":["#,
            number.waba_id, number.display_phone_number, number.phone_number_id
        );
        for (i, m) in messages.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(
                out,
                r#"{sep}{{"profile":{{"name":"Bench Customer {}"}},"wa_id":"{}"}}"#,
                m.customer,
                self.wa_id(m.customer)
            );
        }
        out.push_str(r#"],"messages":["#);
        for (i, m) in messages.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(
                out,
                r#"{sep}{{"from":"{}","id":"{}","timestamp":"{}","type":"text","text":{{"body":"{}"}}}}"#,
                self.wa_id(m.customer),
                self.wamid(m.seq),
                m.sent_us / 1_000_000,
                self.text(m)
            );
        }
        out.push_str("]}}]}]}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number() -> Number {
        Number {
            phone_number_id: "106540352242922".into(),
            waba_id: "102290129340398".into(),
            display_phone_number: "15550001111".into(),
        }
    }

    #[test]
    fn envelope_is_metas_shape_and_parses_in_the_gateway() {
        let run = Run { id: 0xabc };
        let msgs = [
            Message {
                seq: 7,
                customer: 3,
                sent_us: 1_700_000_000_123_456,
            },
            Message {
                seq: 8,
                customer: 41,
                sent_us: 1_700_000_001_000_000,
            },
        ];
        let body = run.envelope(&number(), &msgs);
        let env: serde_json::Value = serde_json::from_str(&body).expect("valid JSON");
        let value = &env["entry"][0]["changes"][0]["value"];
        assert_eq!(env["entry"][0]["id"], "102290129340398");
        assert_eq!(value["metadata"]["phone_number_id"], "106540352242922");
        assert_eq!(value["contacts"][1]["wa_id"], "990000000041");
        let m = &value["messages"][0];
        assert_eq!(m["from"], "990000000003");
        assert_eq!(m["id"], "wamid.HBgLBENCH00000ABC12AE30237B17DF14");
        assert_eq!(m["timestamp"], "1700000000");
        assert_eq!(m["text"]["body"], "bench-00000abc-7-1700000000123456");
        let parsed = crate::cloudapi::envelope::parse(body.as_bytes()).expect("gateway parses it");
        assert_eq!(parsed.entry.len(), 1);
    }

    #[test]
    fn wamids_are_unique_and_not_in_sending_order() {
        let run = Run { id: 0xabc };
        let ids: Vec<String> = (0..10_000).map(|seq| run.wamid(seq)).collect();
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        // In sending order, about half of the ids sort after the one before (as random ids
        // do), not all of them.
        let rising = ids.windows(2).filter(|w| w[1] > w[0]).count();
        assert!((4_000..6_000).contains(&rising), "{rising} of 9,999 rise");
    }

    #[test]
    fn replies_are_matched_by_their_marker_only() {
        let run = Run { id: 0xabc };
        let m = Message {
            seq: 42,
            customer: 1,
            sent_us: 99,
        };
        let text = run.text(&m);
        assert_eq!(run.parse_reply(&text), Some((42, 99)));
        assert_eq!(run.parse_reply(&format!("echo: {text}")), Some((42, 99)));
        assert_eq!(
            run.parse_reply(&format!("re: {text} (thanks)")),
            Some((42, 99))
        );
        assert_eq!(Run { id: 0xabd }.parse_reply(&text), None);
        assert_eq!(run.parse_reply("hello"), None);
        assert_eq!(run.parse_reply("bench-00000abc-x-1"), None);
    }
}
