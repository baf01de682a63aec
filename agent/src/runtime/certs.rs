//! Small helpers over DER certificates: validity, serial, PEM.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use signet_spiffe::SpiffeId;
use signet_spiffe::svid::spiffe_id_from_cert;
use x509_parser::prelude::{FromDer, X509Certificate};

/// What the runtime needs to know about a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    /// The SPIFFE ID (the one URI SAN).
    pub spiffe_id: SpiffeId,
    /// `notBefore`.
    pub not_before: SystemTime,
    /// `notAfter`.
    pub not_after: SystemTime,
    /// The serial number, big-endian bytes.
    pub serial: Vec<u8>,
    /// The DNS SANs, in certificate order.
    pub dns_names: Vec<String>,
}

fn to_system_time(secs: i64) -> SystemTime {
    match u64::try_from(secs) {
        Ok(s) => UNIX_EPOCH + Duration::from_secs(s),
        Err(_) => UNIX_EPOCH,
    }
}

/// Unix seconds of a time (0 before the epoch).
pub fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Parses the leaf facts of a DER certificate.
pub fn leaf_info(der: &[u8]) -> Result<LeafInfo, String> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let spiffe_id = spiffe_id_from_cert(der).map_err(|e| e.to_string())?;
    let validity = cert.validity();
    let mut dns_names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = name {
                dns_names.push((*d).to_owned());
            }
        }
    }
    Ok(LeafInfo {
        spiffe_id,
        not_before: to_system_time(validity.not_before.timestamp()),
        not_after: to_system_time(validity.not_after.timestamp()),
        serial: cert.raw_serial().to_vec(),
        dns_names,
    })
}

/// PEM `CERTIFICATE` blocks of DER certificates (LF line endings).
pub fn certs_to_pem<'a>(ders: impl IntoIterator<Item = &'a [u8]>) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    ders.into_iter()
        .map(|d| pem::encode_config(&pem::Pem::new("CERTIFICATE", d.to_vec()), config))
        .collect()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Formats a time as RFC 3339 in UTC, to the second.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = unix_secs(t);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar (H. Hinnant).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_767_225_599)),
            "2025-12-31T23:59:59Z"
        );
    }

    #[test]
    fn leaf_info_reads_validity_serial_and_sans() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = vec![
            rcgen::SanType::URI("spiffe://example.org/web".try_into().unwrap()),
            rcgen::SanType::DnsName("web.example.org".try_into().unwrap()),
        ];
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x01, 0x02]));
        params.not_before = time::OffsetDateTime::from_unix_timestamp(1_000).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(2_000).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let info = leaf_info(cert.der()).unwrap();
        assert_eq!(info.spiffe_id.to_string(), "spiffe://example.org/web");
        assert_eq!(info.not_before, UNIX_EPOCH + Duration::from_secs(1_000));
        assert_eq!(info.not_after, UNIX_EPOCH + Duration::from_secs(2_000));
        assert_eq!(info.serial, vec![0x01, 0x02]);
        assert_eq!(info.dns_names, ["web.example.org"]);
        assert!(leaf_info(b"junk").is_err());
        assert!(certs_to_pem([cert.der().as_ref()]).starts_with("-----BEGIN CERTIFICATE-----\n"));
    }
}
