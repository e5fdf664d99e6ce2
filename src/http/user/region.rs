//! Which region serves a phone country code (`/v2/utils/get-region`).
//!
//! The seed names four regions and lists the country codes of its registration form, but gives the
//! mapping only for China and for the 13 Asian codes that may register by phone. The rest follows
//! geography, as a user of each place would expect their nearest cloud:
//!
//! | region | codes |
//! | --- | --- |
//! | `cn` | 86 (mainland China) |
//! | `as` | the seed's 13 (63 PH, 84 VN, 855 KH, 856 LA, 60 MY, 65 SG, 95 MM, 66 TH, 673 BN, 62 ID, 670 TL, 98 IR, 886 TW); the rest of East, South and Central Asia (81 JP, 82 KR, 850 KP, 852 HK, 853 MO, 976 MN, 91 IN, 92 PK, 93 AF, 94 LK, 880 BD, 960 MV, 975 BT, 977 NP, 992 TJ, 993 TM, 996 KG, 998 UZ); Oceania (61 AU, 64 NZ and 670–692 from Timor-Leste and Brunei across the Pacific islands) |
//! | `us` | 1 and every +1xxx (North America, the Caribbean, Guam); Central and South America (51–58, 501–509, 590–599, 297 AW) |
//! | `eu` | Europe (30–49, 350–389, 420–423, 298, 299 GL), Russia and Kazakhstan (7), the Caucasus (374, 994, 995), the Middle East (90, 961–974) and Africa (20–27, 211–269) |
//!
//! Anything else (no such code) is refused with 400.

/// The region for a country code given as digits without `+`; `None` for an unknown code.
pub fn region_of(code: &str) -> Option<&'static str> {
    if code.is_empty() || code.len() > 4 || !code.bytes().all(|b| b.is_ascii_digit()) || code.starts_with('0') {
        return None;
    }
    if code.starts_with('1') {
        // The North American Numbering Plan: +1 and its three-digit area codes.
        return matches!(code.len(), 1 | 4).then_some("us");
    }
    let n: u32 = code.parse().ok()?;
    let region = match n {
        86 => "cn",
        60..=66 | 81 | 82 | 84 | 91..=95 | 98 => "as",
        670..=692 => "as",
        850 | 852 | 853 | 855 | 856 | 880 | 886 => "as",
        960 | 975..=977 | 992 | 993 | 996 | 998 => "as",
        51..=58 | 297 | 501..=509 | 590..=599 => "us",
        7 | 20 | 27 | 30..=34 | 36 | 39..=41 | 43..=49 | 90 => "eu",
        211..=269 | 298 | 299 | 350..=389 | 420 | 421 | 423 | 994 | 995 | 961..=974 => "eu",
        _ => return None,
    };
    Some(region)
}

#[cfg(test)]
mod tests {
    use super::region_of;

    #[test]
    fn regions() {
        assert_eq!(region_of("86"), Some("cn"));
        for c in ["63", "84", "855", "856", "60", "65", "95", "66", "673", "62", "670", "98", "886", "81", "852", "61", "64"] {
            assert_eq!(region_of(c), Some("as"), "{c}");
        }
        for c in ["1", "1264", "1876", "52", "55", "54", "507", "599"] {
            assert_eq!(region_of(c), Some("us"), "{c}");
        }
        for c in ["44", "49", "33", "7", "20", "27", "971", "90", "234", "374", "299"] {
            assert_eq!(region_of(c), Some("eu"), "{c}");
        }
        for c in ["", "0", "086", "999", "12", "123", "12345", "abc", "+86", "8 6"] {
            assert_eq!(region_of(c), None, "{c:?}");
        }
    }
}
