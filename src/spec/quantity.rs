//! Kubernetes resource quantities (`500m`, `0.5`, `128Mi`, `1G`, `2e3`), read as the API
//! server's `resource.Quantity` reads them (apimachinery `pkg/api/resource/quantity.go`):
//! a signed decimal number, then a binary-SI suffix (`Ki` .. `Ei`), a decimal-SI suffix (`n`,
//! `u`, `m`, `k`, `M`, `G`, `T`, `P`, `E`) or a decimal exponent (`e3`, `E-2`).
//!
//! Values are exact: a number is kept as an integer mantissa scaled by a power of ten (and of
//! two), and rounded up only when read in whole units, as `Quantity.Value()` and
//! `MilliValue()` round up.

use std::fmt;

/// A parsed quantity: `mantissa * 10^exp10 * 2^exp2`, `mantissa` non-negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    mantissa: u128,
    exp10: i32,
    exp2: u32,
    negative: bool,
}

/// Why a quantity does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantityError(&'static str);

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// The largest value [`Quantity::units`] and [`Quantity::millis`] give: the API server keeps
/// quantities in an int64 too.
const MAX: u128 = i64::MAX as u128;

impl Quantity {
    pub fn parse(text: &str) -> Result<Quantity, QuantityError> {
        const BAD: QuantityError = QuantityError(
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
        );
        let s = text;
        let (negative, s) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, suffix) = s.split_at(end);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(BAD);
        }
        let mut mantissa: u128 = 0;
        let mut exp10: i32 = 0;
        for (i, digit) in whole.bytes().chain(fraction.bytes()).enumerate() {
            let in_fraction = i >= whole.len();
            // Digits past what a u128 holds are below any precision a resource uses: a whole
            // digit still counts as the power of ten it stands for, a fraction digit not at all.
            match mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(u128::from(digit - b'0')))
            {
                Some(m) if in_fraction => {
                    mantissa = m;
                    exp10 -= 1;
                }
                Some(m) => mantissa = m,
                None if in_fraction => {}
                None => exp10 += 1,
            }
        }
        let (e10, exp2) = match suffix {
            "" => (0, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            _ => {
                let exponent = suffix
                    .strip_prefix(['e', 'E'])
                    .filter(|e| !e.is_empty())
                    .and_then(|e| e.parse::<i32>().ok())
                    .filter(|e| e.abs() <= 1000)
                    .ok_or(BAD)?;
                (exponent, 0)
            }
        };
        Ok(Quantity {
            mantissa,
            exp10: exp10 + e10,
            exp2,
            negative: negative && mantissa != 0,
        })
    }

    pub fn is_negative(&self) -> bool {
        self.negative
    }

    pub fn is_zero(&self) -> bool {
        self.mantissa == 0
    }

    /// The value in whole units, rounded up (`Quantity.Value()`): bytes for memory. `None`
    /// beyond an int64.
    pub fn units(&self) -> Option<u64> {
        self.scaled(0)
    }

    /// The value in thousandths, rounded up (`Quantity.MilliValue()`): millicores for cpu.
    pub fn millis(&self) -> Option<u64> {
        self.scaled(3)
    }

    /// `|self| * 10^shift`, rounded up.
    fn scaled(&self, shift: i32) -> Option<u64> {
        let mut value = self.mantissa.checked_mul(1u128.checked_shl(self.exp2)?)?;
        let exp = self.exp10 + shift;
        if exp >= 0 {
            for _ in 0..exp {
                value = value.checked_mul(10)?;
                if value > MAX {
                    return None;
                }
            }
        } else {
            for _ in 0..-exp {
                value = value / 10 + u128::from(value % 10 != 0);
            }
        }
        (value <= MAX).then_some(value as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::Quantity;

    fn millis(s: &str) -> u64 {
        Quantity::parse(s).expect("parses").millis().expect("fits")
    }

    fn units(s: &str) -> u64 {
        Quantity::parse(s).expect("parses").units().expect("fits")
    }

    #[test]
    fn cpu_reads_as_millicores() {
        assert_eq!(millis("500m"), 500);
        assert_eq!(millis("0.5"), 500);
        assert_eq!(millis(".25"), 250);
        assert_eq!(millis("2"), 2000);
        assert_eq!(millis("1.0005"), 1001, "rounded up, as MilliValue rounds");
        assert_eq!(millis("100u"), 1);
        assert_eq!(millis("1e-3"), 1);
        assert_eq!(millis("0"), 0);
    }

    #[test]
    fn memory_reads_as_bytes() {
        assert_eq!(units("128Mi"), 128 << 20);
        assert_eq!(units("1Gi"), 1 << 30);
        assert_eq!(units("1G"), 1_000_000_000);
        assert_eq!(units("1.5Gi"), 3 << 29);
        assert_eq!(units("129e6"), 129_000_000);
        assert_eq!(units("123456789"), 123_456_789);
        assert_eq!(units("1k"), 1000);
        assert_eq!(units("100m"), 1, "a fraction of a byte rounds up");
        assert_eq!(units("+64Ki"), 65536);
    }

    #[test]
    fn malformed_and_huge_quantities() {
        for bad in [
            "", "Mi", "1.2.3", "1 Gi", "1KB", "1kb", "1e", "--1", "0x10", "1Gii", "e3",
        ] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(Quantity::parse("-1").expect("parses").is_negative());
        assert!(!Quantity::parse("-0").expect("parses").is_negative());
        assert_eq!(Quantity::parse("16Ei").expect("parses").units(), None);
        assert_eq!(Quantity::parse("1e30").expect("parses").units(), None);
        assert_eq!(units("999999999999999999999e-20"), 10);
        // Past what a u128 holds: whole digits still count, fraction digits no longer do.
        let digits = "1234567890".repeat(5);
        assert_eq!(
            Quantity::parse(&format!("{digits}e-45"))
                .expect("parses")
                .units(),
            Some(12_346)
        );
        assert_eq!(units(&format!("0.{}1", "0".repeat(50))), 1, "rounded up");
        assert_eq!(millis(&format!("2.{digits}")), 2124);
    }
}
