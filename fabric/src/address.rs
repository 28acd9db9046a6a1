//! [`Address`]: an endpoint's `fi_getname` bytes plus its provider name, printable for group
//! files as `<provider>:<hex>`, e.g. `tcp;ofi_rxm:0200...`.

use std::fmt;
use std::str::FromStr;

/// Longest raw address accepted (bytes). libfabric addresses are tens of bytes; shm names are
/// ~ 100; this bounds what a hostile group file can make us allocate.
pub const MAX_ADDRESS_LEN: usize = 1024;

/// A malformed or mismatched address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// No `:` separating the provider from the hex bytes.
    #[error("address {0:?} is not of the form <provider>:<hex>")]
    Format(String),
    /// A character is not a hex digit, or the digit count is odd.
    #[error("address hex is malformed at character {0}")]
    Hex(usize),
    /// The hex is empty or decodes to more than [`MAX_ADDRESS_LEN`] bytes.
    #[error("address is {0} bytes, expected 1..={MAX_ADDRESS_LEN}")]
    Length(usize),
    /// The address was made by another provider than the endpoint's.
    #[error("address belongs to provider {theirs:?} but this endpoint uses {ours:?}; both ends must use the same provider")]
    ProviderMismatch {
        /// Our provider.
        ours: String,
        /// The address's provider.
        theirs: String,
    },
}

/// An endpoint address.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Address {
    provider: String,
    bytes: Vec<u8>,
}

impl Address {
    /// From raw bytes (length-checked).
    pub fn new(provider: &str, bytes: Vec<u8>) -> Result<Self, AddressError> {
        if bytes.is_empty() || bytes.len() > MAX_ADDRESS_LEN {
            return Err(AddressError::Length(bytes.len()));
        }
        Ok(Address {
            provider: provider.to_owned(),
            bytes,
        })
    }

    /// From the provider name and the hex string.
    pub fn from_hex(provider: &str, hex: &str) -> Result<Self, AddressError> {
        if hex.is_empty() || hex.len() > 2 * MAX_ADDRESS_LEN {
            return Err(AddressError::Length(hex.len() / 2));
        }
        Self::new(provider, unhex(hex)?)
    }

    /// The provider that made it.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The raw `fi_getname` bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Lower-case hex of the bytes.
    pub fn to_hex(&self) -> String {
        hex(&self.bytes)
    }

    /// Refuses an address of another provider.
    pub fn check_provider(&self, ours: &str) -> Result<(), AddressError> {
        if self.provider != ours {
            return Err(AddressError::ProviderMismatch {
                ours: ours.to_owned(),
                theirs: self.provider.clone(),
            });
        }
        Ok(())
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.provider, self.to_hex())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

impl FromStr for Address {
    type Err = AddressError;

    /// Parses `<provider>:<hex>` (the provider may contain `;`, never `:`).
    fn from_str(s: &str) -> Result<Self, AddressError> {
        let (provider, hex) = s
            .rsplit_once(':')
            .filter(|(p, _)| !p.is_empty())
            .ok_or_else(|| AddressError::Format(s.chars().take(64).collect()))?;
        Address::from_hex(provider, hex)
    }
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

fn unhex(s: &str) -> Result<Vec<u8>, AddressError> {
    let b = s.as_bytes();
    if b.len() & 1 != 0 {
        return Err(AddressError::Hex(b.len()));
    }
    let digit = |i: usize| -> Result<u8, AddressError> {
        let c = b[i];
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(AddressError::Hex(i)),
        }
    };
    (0..b.len() / 2)
        .map(|i| Ok(digit(2 * i)? << 4 | digit(2 * i + 1)?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prints_and_parses_provider_and_hex() {
        let a = Address::new("tcp;ofi_rxm", vec![0, 1, 0xab, 0xff]).expect("addr");
        assert_eq!(a.to_string(), "tcp;ofi_rxm:0001abff");
        let b: Address = "tcp;ofi_rxm:0001ABff".parse().expect("parse");
        assert_eq!(a, b);
        assert_eq!(Address::from_hex("shm", "00").expect("hex").bytes(), &[0]);
    }

    #[test]
    fn refuses_malformed_and_mismatched() {
        assert!(matches!(
            "nocolon".parse::<Address>(),
            Err(AddressError::Format(_))
        ));
        assert!(matches!(
            ":00".parse::<Address>(),
            Err(AddressError::Format(_))
        ));
        assert_eq!("shm:0g".parse::<Address>(), Err(AddressError::Hex(1)));
        assert_eq!("shm:000".parse::<Address>(), Err(AddressError::Hex(3)));
        assert_eq!("shm:".parse::<Address>(), Err(AddressError::Length(0)));
        let huge = format!("shm:{}", "00".repeat(MAX_ADDRESS_LEN + 1));
        assert!(matches!(
            huge.parse::<Address>(),
            Err(AddressError::Length(_))
        ));
        let a = Address::new("shm", vec![1]).expect("addr");
        let e = a.check_provider("tcp;ofi_rxm").expect_err("mismatch");
        assert!(e.to_string().contains("same provider"), "{e}");
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,200}") {
            let _ = s.parse::<Address>();
        }

        #[test]
        fn roundtrip(p in "[a-z;_]{1,20}", bytes in proptest::collection::vec(any::<u8>(), 1..200)) {
            let a = Address::new(&p, bytes).expect("addr");
            prop_assert_eq!(a.to_string().parse::<Address>(), Ok(a));
        }
    }
}
