//! Number syntax of the exposition formats, as Prometheus reads it.
//!
//! Prometheus reads values with Go's `strconv.ParseFloat` but refuses the
//! forms Go added later (hexadecimal mantissas and `_` separators), so both
//! formats accept: decimal and exponent forms, `Inf`/`Infinity` with an
//! optional sign, and `NaN`, the words in any case. A number too large for a
//! double is an error, as it is in Go, not an infinity.

/// Parses a sample value or label float the way Prometheus does.
pub(crate) fn parse_go_float(token: &str) -> Option<f64> {
    let bytes = token.as_bytes();
    if let Some(value) = parse_short_decimal(bytes) {
        return Some(value);
    }
    let first = *bytes.first()?;
    if first.is_ascii_digit() || first == b'.' || first == b'-' || first == b'+' {
        let unsigned = match first {
            b'-' | b'+' => &token[1..],
            _ => token,
        };
        if unsigned
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        {
            // Rust and Go agree on this alphabet: digits, one dot, one
            // exponent. Only Go reports overflow, as a range error.
            return token.parse::<f64>().ok().filter(|v| v.is_finite());
        }
        // A sign may precede the infinity words only, never NaN.
        if first == b'-' || first == b'+' {
            let negative = first == b'-';
            return parse_infinity(unsigned).map(|v| if negative { -v } else { v });
        }
        return None;
    }
    if token.eq_ignore_ascii_case("nan") {
        return Some(f64::NAN);
    }
    parse_infinity(token)
}

/// Decimals of at most this many digits take the fast path.
const SHORT_DECIMAL_DIGITS: usize = 15;

/// `10^i`, each exact in a double.
const POWERS_OF_TEN: [f64; SHORT_DECIMAL_DIGITS + 1] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// The fast path for what most expositions hold: `[-+]digits[.digits]`
/// with at most 15 digits, such as `1027`, `0.005` or `-3.25`. The digits
/// form an integer below 2^53 and the scale a power of ten up to 10^15,
/// both exact in a double, so their quotient is the correctly rounded
/// value, the same that the full parser finds (Clinger's fast path).
/// `None` for anything else, which goes to the full parser.
fn parse_short_decimal(bytes: &[u8]) -> Option<f64> {
    let (negative, digits) = match *bytes.first()? {
        b'-' => (true, &bytes[1..]),
        b'+' => (false, &bytes[1..]),
        _ => (false, bytes),
    };
    // Fifteen digits and a dot at most.
    if digits.len() > SHORT_DECIMAL_DIGITS + 1 {
        return None;
    }
    let mut mantissa = 0u64;
    let mut n_digits = 0;
    let mut dot = None;
    for (i, &b) in digits.iter().enumerate() {
        match b {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(b - b'0');
                n_digits += 1;
            }
            b'.' if dot.is_none() => dot = Some(i),
            _ => return None,
        }
    }
    if n_digits == 0 || n_digits > SHORT_DECIMAL_DIGITS {
        return None;
    }
    let fraction_digits = dot.map_or(0, |dot| digits.len() - dot - 1);
    #[allow(
        clippy::cast_precision_loss,
        reason = "below 10^15, so exact in a double"
    )]
    let value = mantissa as f64 / POWERS_OF_TEN[fraction_digits];
    Some(if negative { -value } else { value })
}

fn parse_infinity(word: &str) -> Option<f64> {
    (word.eq_ignore_ascii_case("inf") || word.eq_ignore_ascii_case("infinity"))
        .then_some(f64::INFINITY)
}

/// Parses a timestamp of the text format: a decimal int64 of milliseconds.
pub(crate) fn parse_go_int(token: &str) -> Option<i64> {
    let bytes = token.as_bytes();
    let digits = match bytes.first()? {
        b'+' | b'-' => &bytes[1..],
        _ => bytes,
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    token.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_float_syntax() {
        let cases: &[(&str, Option<f64>)] = &[
            ("1", Some(1.0)),
            ("-2.5e3", Some(-2500.0)),
            ("+7", Some(7.0)),
            (".5", Some(0.5)),
            ("5.", Some(5.0)),
            ("1E-3", Some(0.001)),
            ("+Inf", Some(f64::INFINITY)),
            ("-inf", Some(f64::NEG_INFINITY)),
            ("Infinity", Some(f64::INFINITY)),
            ("-INFINITY", Some(f64::NEG_INFINITY)),
            ("0x1p-2", None),
            ("+NaN", None),
            ("-nan", None),
            ("1_000", None),
            ("", None),
            ("1e", None),
            ("e1", None),
            ("--1", None),
            ("1.2.3", None),
            ("12a", None),
            ("in", None),
            ("infinit", None),
            ("0x1p-2", None),
            ("0x10", None),
            ("1e400", None),
            ("-1e400", None),
            ("1e-400", Some(0.0)),
        ];
        for &(token, expected) in cases {
            assert_eq!(parse_go_float(token), expected, "{token}");
        }
        assert!(parse_go_float("NaN").is_some_and(f64::is_nan));
        assert!(parse_go_float("-0").is_some_and(|v| v == 0.0 && v.is_sign_negative()));
        assert!(parse_go_float("-0.0").is_some_and(|v| v == 0.0 && v.is_sign_negative()));
        assert!(parse_go_float("nan").is_some_and(f64::is_nan));
    }

    #[test]
    fn short_decimals_read_as_the_full_parser_reads_them() {
        let mut tokens: Vec<String> = [
            "0",
            "7",
            "-7",
            "+7",
            "0.1",
            "0.005",
            "2.5",
            "-3.25",
            ".5",
            "5.",
            "-.5",
            "+5.",
            "999999999999999",
            "99999999999999.9",
            "0.000000000000001",
            "123456789012345",
            "1234567890123456",
            "0.30000000000000004",
            "9007199254740993",
            "00000000000000001",
            "9007199254740992",
            "9007199254740991",
            "900719925474099.3",
            "4374.233193893432",
            "0.0000000000000000000001",
            "0.00000000000000000000001",
            "18446744073709551615",
            "9999999999999999999",
            "99999999999999999999",
        ]
        .iter()
        .map(|t| (*t).to_owned())
        .collect();
        // Every split of a few digit strings by a dot.
        for digits in [
            "1",
            "12345",
            "314159265358979",
            "100000000000000",
            "900719925474099",
        ] {
            for dot in 0..=digits.len() {
                tokens.push(format!("{}.{}", &digits[..dot], &digits[dot..]));
            }
        }
        for token in &tokens {
            let expected = token.parse::<f64>().ok();
            assert_eq!(parse_go_float(token), expected, "{token}");
            if let Some(fast) = parse_short_decimal(token.as_bytes()) {
                assert_eq!(Some(fast.to_bits()), expected.map(f64::to_bits), "{token}");
            }
        }
        for token in [".", "-", "+", "-.", "1.2.3", "1e5", "", "12a"] {
            assert_eq!(parse_short_decimal(token.as_bytes()), None, "{token}");
        }
    }

    #[test]
    fn random_decimals_read_as_the_full_parser_reads_them() {
        // Digit strings of every length up to 21 around 2^53, with a dot
        // anywhere, from a fixed xorshift sequence.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..200_000 {
            let n_digits = 1 + usize::try_from(next() % 21).unwrap_or(0);
            let mut token: String = (0..n_digits)
                .map(|_| char::from(b'0' + u8::try_from(next() % 10).unwrap_or(0)))
                .collect();
            if next() % 3 == 0 {
                // Near 2^53, where exactness ends.
                token = format!("{}", 9_007_199_254_740_992 - 64 + next() % 128);
            }
            let dot = usize::try_from(next() % (token.len() as u64 + 2)).unwrap_or(0);
            if dot <= token.len() {
                token.insert(dot, '.');
            }
            if next() % 4 == 0 {
                token.insert(0, '-');
            }
            let expected = token.parse::<f64>().ok().filter(|v| v.is_finite());
            let got = parse_go_float(&token);
            assert_eq!(got.map(f64::to_bits), expected.map(f64::to_bits), "{token}");
        }
    }

    #[test]
    fn go_int_syntax() {
        assert_eq!(parse_go_int("1700000000000"), Some(1_700_000_000_000));
        assert_eq!(parse_go_int("-5"), Some(-5));
        assert_eq!(parse_go_int("+5"), Some(5));
        assert_eq!(parse_go_int("9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_go_int("9223372036854775808"), None);
        assert_eq!(parse_go_int("1.5"), None);
        assert_eq!(parse_go_int("1e3"), None);
        assert_eq!(parse_go_int("-"), None);
        assert_eq!(parse_go_int(""), None);
    }
}
