//! Printable endpoint addresses: `<provider>:<hex of the fi_getname bytes>`.
//!
//! The provider travels with the address because both ends must use the same one (`net` RDM
//! and `tcp;ofi_rxm` do not interoperate; shm is node-local), and addresses go into group
//! files as text.

use std::fmt;
use std::str::FromStr;

/// Longest raw address accepted (fi_getname blobs are 16 to ~100 bytes).
pub const MAX_RAW_ADDRESS: usize = 256;
/// Longest provider name accepted.
pub const MAX_PROVIDER: usize = 64;

/// An engine's address: the provider and the raw endpoint name.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Address {
    provider: String,
    raw: Vec<u8>,
}

/// Why a text address does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// No `:` separates the provider from the hex bytes.
    #[error("address {0:?} has no ':' between the provider and the hex address")]
    NoSeparator(String),
    /// The provider part is empty or too long.
    #[error("address provider {0:?} is empty or longer than {MAX_PROVIDER} bytes")]
    BadProvider(String),
    /// The hex part is empty, odd-length, not hex, or too long.
    #[error("address bytes {0:?} are not an even number of hex digits (at most {MAX_RAW_ADDRESS} bytes)")]
    BadHex(String),
}

impl Address {
    /// Builds an address from its parts.
    pub fn new(provider: &str, raw: Vec<u8>) -> Result<Address, AddressError> {
        if provider.is_empty() || provider.len() > MAX_PROVIDER || provider.contains(':') {
            return Err(AddressError::BadProvider(provider.to_owned()));
        }
        if raw.is_empty() || raw.len() > MAX_RAW_ADDRESS {
            return Err(AddressError::BadHex(hex(&raw)));
        }
        Ok(Address {
            provider: provider.to_owned(),
            raw,
        })
    }

    /// The provider name.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The raw `fi_getname` bytes.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.provider, hex(&self.raw))
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Address, AddressError> {
        let (provider, digits) = s
            .rsplit_once(':')
            .ok_or_else(|| AddressError::NoSeparator(s.to_owned()))?;
        let bad = || AddressError::BadHex(digits.to_owned());
        if digits.len() % 2 != 0 || digits.len() > 2 * MAX_RAW_ADDRESS {
            return Err(bad());
        }
        let raw = (0..digits.len() / 2)
            .map(|i| {
                digits
                    .get(2 * i..2 * i + 2)
                    .and_then(|d| u8::from_str_radix(d, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(bad)?;
        Address::new(provider, raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prints_provider_and_hex_and_parses_back() {
        let a = Address::new("tcp;ofi_rxm", vec![0x0a, 0xff, 0]).unwrap();
        assert_eq!(a.to_string(), "tcp;ofi_rxm:0aff00");
        assert_eq!("tcp;ofi_rxm:0aff00".parse::<Address>().unwrap(), a);
    }

    #[test]
    fn bad_text_addresses_are_refused() {
        assert!(matches!(
            "shm".parse::<Address>(),
            Err(AddressError::NoSeparator(_))
        ));
        assert!(matches!(
            ":00".parse::<Address>(),
            Err(AddressError::BadProvider(_))
        ));
        assert!(matches!(
            "shm:0".parse::<Address>(),
            Err(AddressError::BadHex(_))
        ));
        assert!(matches!(
            "shm:zz".parse::<Address>(),
            Err(AddressError::BadHex(_))
        ));
        assert!(matches!(
            "shm:".parse::<Address>(),
            Err(AddressError::BadHex(_))
        ));
        assert!(matches!(
            "shm:é0".parse::<Address>(),
            Err(AddressError::BadHex(_))
        ));
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_text_never_panics(s in ".{0,80}") {
            let _ = s.parse::<Address>();
        }

        #[test]
        fn round_trips(raw in proptest::collection::vec(any::<u8>(), 1..64)) {
            let a = Address::new("shm", raw).unwrap();
            prop_assert_eq!(a.to_string().parse::<Address>().unwrap(), a);
        }
    }
}
