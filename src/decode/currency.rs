//! ISO 4217 alphabetic currency codes accepted in `currency`.
//!
//! The active list (plus the precious-metal and testing codes it defines) is embedded so a
//! typo such as `USd` or `EUO` is caught at the edge instead of creating a bogus settlement group.

/// Sorted list of accepted codes.
const CODES: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD",
    "CAD", "CDF", "CHE", "CHF", "CHW", "CLF", "CLP", "CNY", "COP", "COU", "CRC", "CUC", "CUP",
    "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP",
    "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS",
    "INR", "IQD", "IRR", "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW",
    "KWD", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD",
    "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD", "NGN",
    "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR",
    "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SLL",
    "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY",
    "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "USN", "UYI", "UYU", "UYW", "UZS", "VED", "VES",
    "VND", "VUV", "WST", "XAF", "XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XCD", "XCG", "XDR",
    "XOF", "XPD", "XPF", "XPT", "XSU", "XTS", "XUA", "XXX", "YER", "ZAR", "ZMW", "ZWG", "ZWL",
];

/// One bit per three-letter code (26³ bits), set for the codes in [`CODES`]: a lookup on the
/// decode hot path is an index, not a search.
static TABLE: std::sync::LazyLock<Vec<u64>> = std::sync::LazyLock::new(|| {
    let mut t = vec![0u64; 26 * 26 * 26 / 64 + 1];
    for c in CODES {
        let i = index(c.as_bytes()).expect("upper-case codes");
        t[i / 64] |= 1 << (i % 64);
    }
    t
});

fn index(b: &[u8]) -> Option<usize> {
    match b {
        [a @ b'A'..=b'Z', b @ b'A'..=b'Z', c @ b'A'..=b'Z'] => {
            Some((*a - b'A') as usize * 676 + (*b - b'A') as usize * 26 + (*c - b'A') as usize)
        }
        _ => None,
    }
}

/// Whether `code` is an ISO 4217 alphabetic code.
pub(crate) fn is_iso4217(code: &str) -> bool {
    index(code.as_bytes()).is_some_and(|i| TABLE[i / 64] & (1 << (i % 64)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_is_sorted_and_checked() {
        assert!(CODES.windows(2).all(|w| w[0] < w[1]));
        assert!(is_iso4217("EUR") && is_iso4217("JPY") && is_iso4217("KWD"));
        assert!(!is_iso4217("usd") && !is_iso4217("EURO") && !is_iso4217("ABC"));
        for a in b'A'..=b'Z' {
            for b in b'A'..=b'Z' {
                for c in b'A'..=b'Z' {
                    let code = String::from_utf8(vec![a, b, c]).unwrap();
                    assert_eq!(
                        is_iso4217(&code),
                        CODES.binary_search(&code.as_str()).is_ok()
                    );
                }
            }
        }
    }
}
