//! What the commands' arguments share: range-checked numbers, so that no flag's value reaches
//! arithmetic that could overflow (a `--seeds 18446744073709551615` once multiplied into a panic).

/// An integer flag's value in `MIN..=MAX`, for clap's `value_parser`; other text, or a number
/// outside, is an error that gives the range (clap names the flag).
pub fn between<const MIN: u64, const MAX: u64>(text: &str) -> Result<u64, String> {
    let value: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("not a whole number from {MIN} to {MAX}"))?;
    if (MIN..=MAX).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{value} is not from {MIN} to {MAX}"))
    }
}

/// [`between`] as a count (`usize`).
pub fn count<const MIN: u64, const MAX: u64>(text: &str) -> Result<usize, String> {
    between::<MIN, MAX>(text)
        .and_then(|value| usize::try_from(value).map_err(|_| format!("{value} is too large")))
}

/// A number of seconds: finite and not negative.
pub fn seconds(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(value) if value.is_finite() && value >= 0.0 => Ok(value),
        _ => Err("not a finite number of seconds, 0 or more".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_outside_the_range_or_not_numbers_are_errors_that_give_it() {
        assert_eq!(between::<1, 10>("10"), Ok(10));
        assert_eq!(count::<0, 5>("0"), Ok(0));
        for bad in [
            "0",
            "11",
            "18446744073709551615",
            "18446744073709551616",
            "-1",
            "x",
            "",
        ] {
            let error = between::<1, 10>(bad).unwrap_err();
            assert!(error.contains("from 1 to 10"), "{bad}: {error}");
        }
        assert_eq!(seconds("1.5"), Ok(1.5));
        for bad in ["-1", "inf", "NaN", "x"] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
    }
}
