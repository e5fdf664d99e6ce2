//! Identifier newtypes. A device id can never be passed where a user's apikey belongs, and a
//! session id names one live socket of this process.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Box<str>);

        impl $name {
            pub fn new(value: impl Into<Box<str>>) -> Self {
                Self(value.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }
    };
}

string_id!(
    /// A device's id as printed on it and sent in every frame (`deviceid`).
    DeviceId
);
string_id!(
    /// A user's `apikey`: the stable user id of the protocol. Never a credential by itself.
    UserKey
);
string_id!(
    /// An application id (`X-CK-Appid`, `appid` in `userOnline`).
    AppId
);

/// One live WebSocket session of this process, unique for the life of the process.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SessionId(u64);

impl SessionId {
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    pub fn get(self) -> u64 {
        self.0
    }

    /// An id this process handed out earlier and wrote down ([`SessionId::get`]); it names a
    /// session only in the process that made it.
    pub fn from_stored(n: u64) -> Self {
        Self(n)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// A device id is 10 hex-like characters on real hardware; we accept 1..=64 printable ASCII
/// characters without spaces or quotes so emulators and other vendors' ids fit too.
pub fn valid_device_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
