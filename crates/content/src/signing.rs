//! Keys and signatures.
//!
//! An offline **root key** delegates to **online keys** with a validity window; an online key
//! signs catalogs, schedules and live segments. A signed object carries its delegation, so a
//! node that knows only the root public key it was enrolled with can check the whole chain.
//!
//! Every signature covers a domain-separation prefix naming the kind of object, so a signature
//! on one kind can never be replayed as another.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

use crate::catalog::Catalog;
use crate::encoding::{put_str, put_u8, Decode, DecodeError, Decoder, Encode};
use crate::live::LiveSegment;
use crate::schedule::Schedule;
use crate::time::UnixTime;

/// An ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Wraps raw key bytes (validity is checked when verifying).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw key bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A short, stable fingerprint for logs and error messages: the first 8 bytes of the
    /// BLAKE3 hash of the key, in hex.
    pub fn fingerprint(&self) -> String {
        blake3::hash(&self.0).as_bytes()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn verify(&self, domain: &str, body: &[u8], signature: &[u8; 64]) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        key.verify_strict(&signed_message(domain, body), &sig).is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fingerprint())
    }
}

impl Encode for PublicKey {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
}

impl Decode for PublicKey {
    const WHAT: &'static str = "public key";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        d.array("public key").map(Self)
    }
}

fn signed_message(domain: &str, body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(16 + domain.len() + body.len());
    msg.extend_from_slice(b"courseway/1 ");
    msg.extend_from_slice(domain.as_bytes());
    msg.push(0);
    msg.extend_from_slice(body);
    msg
}

/// The deployment's root key. Kept offline; used only to delegate to online keys.
pub struct RootKey(SigningKey);

impl RootKey {
    /// The key derived from 32 secret random bytes (the caller supplies the randomness).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// The secret seed, to be written to the offline key file.
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public key nodes are enrolled with.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Authorises `key` to sign for the deployment between `not_before` and `not_after`.
    pub fn delegate(&self, key: PublicKey, label: &str, not_before: UnixTime, not_after: UnixTime) -> Delegation {
        let mut delegation = Delegation {
            root: self.public(),
            key,
            label: label.to_owned(),
            not_before,
            not_after,
            signature: [0; 64],
        };
        delegation.signature = self
            .0
            .sign(&signed_message(Delegation::DOMAIN, &delegation.body_bytes()))
            .to_bytes();
        delegation
    }
}

impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RootKey({})", self.public().fingerprint())
    }
}

/// The root's statement that an online key may sign between two instants.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Delegation {
    /// The root key that signed this delegation.
    pub root: PublicKey,
    /// The online key being authorised.
    pub key: PublicKey,
    /// Free text naming the key, e.g. `origin-2026-11`.
    pub label: String,
    pub not_before: UnixTime,
    pub not_after: UnixTime,
    pub signature: [u8; 64],
}

impl Delegation {
    const DOMAIN: &'static str = "delegation";
    const FORMAT: u8 = 1;

    fn body_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_u8(&mut out, Self::FORMAT);
        self.root.encode(&mut out);
        self.key.encode(&mut out);
        put_str(&mut out, &self.label);
        self.not_before.encode(&mut out);
        self.not_after.encode(&mut out);
        out
    }

    /// Whether the root key's signature over this delegation is valid.
    pub fn signature_is_valid(&self) -> bool {
        self.root.verify(Self::DOMAIN, &self.body_bytes(), &self.signature)
    }
}

impl Encode for Delegation {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.body_bytes());
        out.extend_from_slice(&self.signature);
    }
}

impl Decode for Delegation {
    const WHAT: &'static str = "key delegation";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        d.version("key delegation", Self::FORMAT)?;
        Ok(Self {
            root: PublicKey::decode(d)?,
            key: PublicKey::decode(d)?,
            label: d.str("key label", 64)?,
            not_before: UnixTime::decode(d)?,
            not_after: UnixTime::decode(d)?,
            signature: d.array("delegation signature")?,
        })
    }
}

/// An object kind that online keys sign.
pub trait Signable: Encode + Decode {
    /// The domain-separation label signatures of this kind cover.
    const DOMAIN: &'static str;
}

impl Signable for Catalog {
    const DOMAIN: &'static str = "catalog";
}
impl Signable for Schedule {
    const DOMAIN: &'static str = "schedule";
}
impl Signable for LiveSegment {
    const DOMAIN: &'static str = "live-segment";
}

/// An online signing key with the delegation that authorises it.
pub struct OnlineKey {
    key: SigningKey,
    delegation: Delegation,
}

impl OnlineKey {
    /// Pairs a secret key with its delegation.
    ///
    /// Returns `None` if the delegation is for another key.
    pub fn new(seed: [u8; 32], delegation: Delegation) -> Option<Self> {
        let key = SigningKey::from_bytes(&seed);
        (PublicKey(key.verifying_key().to_bytes()) == delegation.key).then_some(Self { key, delegation })
    }

    /// The public half of an online key made from `seed`, to be delegated to by the root.
    pub fn public_for_seed(seed: [u8; 32]) -> PublicKey {
        PublicKey(SigningKey::from_bytes(&seed).verifying_key().to_bytes())
    }

    /// The secret seed, to be stored with restricted permissions.
    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The delegation this key signs under.
    pub fn delegation(&self) -> &Delegation {
        &self.delegation
    }

    /// Signs `body`.
    pub fn sign<T: Signable>(&self, body: T) -> Signed<T> {
        let signature = self.key.sign(&signed_message(T::DOMAIN, &body.to_bytes())).to_bytes();
        Signed {
            body,
            delegation: self.delegation.clone(),
            signature,
        }
    }
}

impl fmt::Debug for OnlineKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OnlineKey({})", self.delegation.label)
    }
}

/// A value with the online key's signature and that key's delegation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Signed<T> {
    pub body: T,
    pub delegation: Delegation,
    pub signature: [u8; 64],
}

impl<T: Signable> Signed<T> {
    /// Whether the online key's signature over the body is valid. Does not check the
    /// delegation; [`crate::trust::TrustState`] checks the whole chain.
    pub fn body_signature_is_valid(&self) -> bool {
        self.delegation
            .key
            .verify(T::DOMAIN, &self.body.to_bytes(), &self.signature)
    }
}

impl<T: Signable> Encode for Signed<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        self.delegation.encode(out);
        self.body.encode(out);
        out.extend_from_slice(&self.signature);
    }
}

impl<T: Signable> Decode for Signed<T> {
    const WHAT: &'static str = T::WHAT;
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            delegation: Delegation::decode(d)?,
            body: T::decode(d)?,
            signature: d.array("signature")?,
        })
    }
}
