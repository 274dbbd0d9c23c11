//! PKCE (RFC 7636, S256 only), `state` values and their constant-time comparison.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// `n` random bytes from the operating system, base64url without padding.
pub fn random_token(n: usize) -> Result<String, getrandom::Error> {
    let mut bytes = Zeroizing::new(vec![0u8; n]);
    getrandom::fill(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(&*bytes))
}

/// A PKCE verifier and its S256 challenge.
#[derive(Debug)]
pub struct Pkce {
    /// Sent only in the token request.
    pub verifier: SecretString,
    /// `BASE64URL(SHA256(verifier))`, sent in the authorization request.
    pub challenge: String,
}

impl Pkce {
    /// A fresh verifier of 43 characters (32 random bytes) and its challenge.
    pub fn new() -> Result<Self, getrandom::Error> {
        let verifier = random_token(32)?;
        let challenge = challenge_for(&verifier);
        Ok(Self {
            verifier: SecretString::from(verifier),
            challenge,
        })
    }
}

/// The S256 code challenge of `verifier`.
pub fn challenge_for(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Whether `received` is `expected`, in time that does not depend on where they differ.
pub fn same_state(expected: &SecretString, received: &str) -> bool {
    let expected = expected.expose_secret().as_bytes();
    expected.len() == received.len() && bool::from(expected.ct_eq(received.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_matches_the_rfc_7636_example() {
        // RFC 7636, appendix B.
        assert_eq!(
            challenge_for("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn verifiers_are_fresh_and_long_enough() {
        let a = Pkce::new().unwrap();
        let b = Pkce::new().unwrap();
        assert_eq!(a.verifier.expose_secret().len(), 43);
        assert_ne!(a.verifier.expose_secret(), b.verifier.expose_secret());
        assert_eq!(a.challenge, challenge_for(a.verifier.expose_secret()));
    }

    #[test]
    fn state_comparison_is_exact() {
        let s = SecretString::from("abcDEF123".to_owned());
        assert!(same_state(&s, "abcDEF123"));
        assert!(!same_state(&s, "abcDEF124"));
        assert!(!same_state(&s, "abcDEF12"));
        assert!(!same_state(&s, "abcDEF1234"));
        assert!(!same_state(&s, ""));
    }
}
