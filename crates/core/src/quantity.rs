//! Kubernetes resource quantities (`500m`, `2`, `256Mi`, `1e3`) as integers
//! in thousandths, so CPU and memory fit one type and sums are exact.

/// Largest quantity taken, in thousandths: kube's own limit is far under
/// it, and sums of many cannot overflow.
const MAX_MILLI: i128 = 1_000_000_000_000_000_000_000_000_000_000; // 1e30

/// A quantity in thousandths (millicores for CPU, milli-bytes for memory),
/// so both fit one integer type. Exact, in integers, as kube's own parser:
/// a decimal number (`2`, `0.5`, `.5`, `1.`), then a decimal suffix (`n`,
/// `u`, `m`, none, `k`, `M`, `G`, `T`, `P`, `E`), a binary one (`Ki` …
/// `Ei`) or an exponent (`e3`, `E-2`). Anything finer than a thousandth is
/// rounded up, as `MilliValue` does. Negative and absurd quantities are
/// not quantities (and must not wrap the sums they are added to).
pub fn parse(q: &str) -> Option<i128> {
    let q = q.trim();
    let q = q.strip_prefix('+').unwrap_or(q);
    let end = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 32 {
        return None;
    }
    let mut mantissa: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    // The value is mantissa × 10^exp × 1024^binary.
    let mut exp = -(fraction.len() as i32);
    let binary = match suffix {
        "Ki" => 1,
        "Mi" => 2,
        "Gi" => 3,
        "Ti" => 4,
        "Pi" => 5,
        "Ei" => 6,
        _ => 0,
    };
    if binary == 0 {
        exp += match suffix {
            "n" => -9,
            "u" => -6,
            "m" => -3,
            "" => 0,
            "k" => 3,
            "M" => 6,
            "G" => 9,
            "T" => 12,
            "P" => 15,
            "E" => 18,
            other => {
                let e = other
                    .strip_prefix('e')
                    .or_else(|| other.strip_prefix('E'))?;
                let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                if digits.is_empty()
                    || digits.len() > 3
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                {
                    return None;
                }
                e.parse::<i32>().ok()?
            }
        };
    }
    for _ in 0..binary {
        mantissa = mantissa.checked_mul(1024)?;
    }
    exp += 3; // thousandths
    let milli = if exp >= 0 {
        if mantissa != 0 && exp > 38 {
            return None;
        }
        mantissa.checked_mul(10i128.checked_pow(exp as u32)?)?
    } else if -exp > 38 {
        i128::from(mantissa != 0)
    } else {
        let unit = 10i128.pow((-exp) as u32);
        (mantissa + unit - 1) / unit
    };
    (milli <= MAX_MILLI).then_some(milli)
}

/// Format thousandths back as a quantity (`500m`, `2`, `256Mi`).
pub fn format(milli: i128, memory: bool) -> String {
    if milli % 1000 != 0 {
        return format!("{milli}m");
    }
    let n = milli / 1000;
    if memory && n != 0 {
        for (suffix, unit) in [("Gi", 1i128 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
            if n % unit == 0 {
                return format!("{}{suffix}", n / unit);
            }
        }
    }
    n.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_quantities() {
        assert_eq!(parse("500m"), Some(500));
        assert_eq!(parse("2"), Some(2000));
        assert_eq!(parse("0.5"), Some(500));
        assert_eq!(parse("128Mi"), Some(128 * 1024 * 1024 * 1000));
        assert_eq!(parse("1G"), Some(1_000_000_000_000));
        assert_eq!(parse("1e3"), Some(1_000_000));
        assert_eq!(parse("nonsense"), None);
        assert_eq!(parse("-1"), None, "negative");
        assert_eq!(parse("1e36"), None, "absurd");
        assert_eq!(
            parse("532964710945695k"),
            Some(532_964_710_945_695_000_000),
            "exact"
        );
        assert_eq!(parse(".5"), Some(500));
        assert_eq!(parse("1."), Some(1000));
        assert_eq!(parse("+2"), Some(2000));
        assert_eq!(
            parse("1E"),
            Some(1_000_000_000_000_000_000_000),
            "exa, not an exponent"
        );
        assert_eq!(parse("1E2"), Some(100_000));
        assert_eq!(parse("2e-3"), Some(2));
        assert_eq!(parse("1Ei"), Some((1i128 << 60) * 1000));
        assert_eq!(parse("1n"), Some(1), "finer than a thousandth rounds up");
        assert_eq!(parse("0"), Some(0));
        for bad in [
            "", ".", "1.2.3", "1e", "1e+", "1x", "1 k", "1ki", "e3", "--1", "1e9999",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert_eq!(format(500, false), "500m");
        assert_eq!(format(3000, false), "3");
        assert_eq!(format(256 * 1024 * 1024 * 1000, true), "256Mi");
    }

    #[test]
    fn parses_and_formats() {
        assert_eq!(parse("500m"), Some(500));
        assert_eq!(parse("2"), Some(2000));
        assert_eq!(parse("1Ki"), Some(1024 * 1000));
        assert_eq!(parse("-1"), None);
        assert_eq!(parse("x"), None);
        assert_eq!(format(parse("16Gi").unwrap() * 3, true), "48Gi");
        assert_eq!(format(1500, false), "1500m");
        assert_eq!(format(4000, false), "4");
    }
}
