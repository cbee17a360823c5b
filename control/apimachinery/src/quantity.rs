//! Resource quantities, as Kubernetes writes them: "500m", "128Mi", "1.5", "2G", "1e3".

/// Parse a quantity into its value times `scale` (1000 for CPU millicores, 1 for bytes).
pub fn parse_quantity(q: &str, scale: i64) -> Option<i64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0f64.powi(3),
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some((n * mult * scale as f64).ceil() as i64)
}

#[cfg(test)]
mod tests {
    use super::parse_quantity as q;

    #[test]
    fn quantities() {
        assert_eq!(q("500m", 1000), Some(500));
        assert_eq!(q("2", 1000), Some(2000));
        assert_eq!(q("1.5", 1000), Some(1500));
        assert_eq!(q("128Mi", 1), Some(128 << 20));
        assert_eq!(q("1G", 1), Some(1_000_000_000));
        assert_eq!(q("1e3", 1), Some(1000));
        assert_eq!(q("12x", 1), None);
    }
}
