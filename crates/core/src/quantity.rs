//! Kubernetes resource quantities (`500m`, `2`, `256Mi`, `1e3`) as integers
//! in thousandths, so CPU and memory fit one type and sums are exact.

/// A quantity in thousandths (millicores for CPU, milli-bytes for memory),
/// so both fit one integer type.
pub fn parse(q: &str) -> Option<i128> {
    let q = q.trim();
    let (number, suffix) = q.split_at(q.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(q.len()));
    let (number, exp) = match suffix
        .strip_prefix('e')
        .or_else(|| suffix.strip_prefix('E'))
    {
        Some(e) if !e.is_empty() && e.chars().all(|c| c.is_ascii_digit() || c == '-') => {
            (number, e.parse::<i32>().ok()?)
        }
        _ => (number, 0),
    };
    let suffix = if exp != 0 { "" } else { suffix };
    let value: f64 = number.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        _ => return None,
    };
    let milli = value * factor * 10f64.powi(exp) * 1000.0;
    // Negative and absurd quantities are not quantities (and must not wrap
    // the sums below): kube's own limit is far under 1e30.
    (milli.is_finite() && (0.0..1e30).contains(&milli)).then(|| milli.round() as i128)
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
