//! Property tests: rendering then parsing gives back the model, and
//! rendering what was parsed is stable.

use proptest::prelude::*;
use tether_model::{Format, parse, render};

use crate::support::{families, same};

fn round_trip(format: Format, model: &[tether_model::MetricFamily]) -> Result<(), TestCaseError> {
    let mut first = Vec::new();
    render(model, format, &mut first);
    let parsed = parse(&first, format).map_err(|e| {
        TestCaseError::fail(format!(
            "{e}\n--- rendered ---\n{}",
            String::from_utf8_lossy(&first)
        ))
    })?;
    prop_assert!(
        same(&parsed, &model.to_vec()),
        "parse(render(m)) != m\n--- rendered ---\n{}\n--- model ---\n{model:#?}\n--- parsed ---\n{parsed:#?}",
        String::from_utf8_lossy(&first)
    );
    let mut second = Vec::new();
    render(&parsed, format, &mut second);
    prop_assert_eq!(
        String::from_utf8_lossy(&first),
        String::from_utf8_lossy(&second)
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn text_round_trip(model in families(Format::Text, 6)) {
        round_trip(Format::Text, &model)?;
    }

    #[test]
    fn openmetrics_round_trip(model in families(Format::OpenMetrics, 6)) {
        round_trip(Format::OpenMetrics, &model)?;
    }
}
