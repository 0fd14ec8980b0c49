//! X-Hub-Signature-256: HMAC-SHA256 of the raw request body keyed with the app secret.
//! Checked over the exact bytes, in constant time, before anything parses the body.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a signature was refused; the text is safe to log (it holds no secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("X-Hub-Signature-256 header missing")]
    Missing,
    #[error("X-Hub-Signature-256 is not of the form sha256=<64 hex digits>")]
    Malformed,
    #[error(
        "X-Hub-Signature-256 does not match the body (wrong app secret, or the body was altered)"
    )]
    Mismatch,
}

/// The header value Meta would send for `body`: `sha256=<hex>`.
pub fn sign(app_secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(app_secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks `header` (the X-Hub-Signature-256 value, if any) against `body`.
pub fn verify(app_secret: &[u8], header: Option<&[u8]>, body: &[u8]) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex_digest = header
        .strip_prefix(b"sha256=")
        .ok_or(SignatureError::Malformed)?;
    if hex_digest.len() != 64 {
        return Err(SignatureError::Malformed);
    }
    let mut expected = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut expected).map_err(|_| SignatureError::Malformed)?;
    let mut mac = HmacSha256::new_from_slice(app_secret).expect("HMAC takes keys of any length");
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_vector() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog").
        assert_eq!(
            sign(b"key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn refusals() {
        let body = br#"{"object":"whatsapp_business_account"}"#;
        let good = sign(b"s3cret", body);
        assert_eq!(verify(b"s3cret", Some(good.as_bytes()), body), Ok(()));
        let cases: [(Option<&[u8]>, SignatureError); 5] = [
            (None, SignatureError::Missing),
            (Some(b"sha1=abc"), SignatureError::Malformed),
            (
                Some(&good.as_bytes()[..good.len() - 2]),
                SignatureError::Malformed,
            ),
            (Some(b"sha256=zz"), SignatureError::Malformed),
            (
                Some(sign(b"other", body).as_bytes().to_vec().leak()),
                SignatureError::Mismatch,
            ),
        ];
        for (header, want) in cases {
            assert_eq!(verify(b"s3cret", header, body), Err(want));
        }
        // Re-serialised JSON is different bytes and must not pass.
        assert_eq!(
            verify(
                b"s3cret",
                Some(good.as_bytes()),
                br#"{"object": "whatsapp_business_account"}"#
            ),
            Err(SignatureError::Mismatch)
        );
    }

    proptest! {
        #[test]
        fn sign_then_verify_roundtrips(secret in proptest::collection::vec(any::<u8>(), 0..64),
                                       body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let sig = sign(&secret, &body);
            prop_assert_eq!(verify(&secret, Some(sig.as_bytes()), &body), Ok(()));
        }

        #[test]
        fn any_flipped_bit_is_refused(body in proptest::collection::vec(any::<u8>(), 1..256), idx in any::<prop::sample::Index>(), bit in 0u8..8) {
            let sig = sign(b"k", &body);
            let mut tampered = body.clone();
            let i = idx.index(tampered.len());
            tampered[i] ^= 1 << bit;
            prop_assert_eq!(verify(b"k", Some(sig.as_bytes()), &tampered), Err(SignatureError::Mismatch));
        }
    }
}
