//! Fuzzes SPIFFE ID and trust domain parsing.
//!
//! Besides "never panics", it checks the invariants every accepted ID must satisfy: it is at most
//! 2048 bytes, prints back exactly as given, re-parses to itself, and can be rebuilt from its trust
//! domain and path.

#![no_main]

use libfuzzer_sys::fuzz_target;
use signet_spiffe::id::{MAX_ID_LEN, MAX_TRUST_DOMAIN_LEN};
use signet_spiffe::{SpiffeId, TrustDomain};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(id) = SpiffeId::parse(input) {
        assert!(input.len() <= MAX_ID_LEN);
        assert!(input.is_ascii());
        assert_eq!(id.to_string(), input);
        assert_eq!(SpiffeId::parse(&id.to_string()).as_ref(), Ok(&id));

        let td = id.trust_domain();
        assert!(!td.name().is_empty() && td.name().len() <= MAX_TRUST_DOMAIN_LEN);
        assert_eq!(TrustDomain::new(td.name()).as_ref(), Ok(td));
        assert_eq!(TrustDomain::new(&td.id_string()).as_ref(), Ok(td));
        assert_eq!(td.spiffe_id(id.path()).as_ref(), Ok(&id));
        assert!(id.is_member_of(td));
    }

    if let Ok(td) = TrustDomain::new(input) {
        assert_eq!(TrustDomain::new(td.name()).as_ref(), Ok(&td));
        assert_eq!(SpiffeId::parse(&td.id_string()).map(|id| id.path().is_empty()), Ok(true));
    }
});
