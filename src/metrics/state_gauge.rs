//! A gauge with one series per entity, labelled with the entity's current state: the shape of
//! `wa_gateway_number_status`. Built at each gather from the states last set, so it keeps no
//! labelled child per entity between scrapes.

use super::{FromSpec, Spec};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};
use std::sync::{Arc, Mutex};

/// `{<entity label>="<id>", <state label>="<state>"} 1` for each entity, and no series for the
/// states it is not in. A state set (one series per state, 0 or 1) would multiply the series by
/// the number of states for the same information; a change of state here ends one series and
/// starts another, which Prometheus marks stale at once.
#[derive(Clone, Debug)]
pub struct StateGauge {
    desc: Desc,
    states: Arc<Mutex<States>>,
}

/// (entity, its state), sorted by entity, each entity once.
type States = Vec<(Box<str>, &'static str)>;

impl StateGauge {
    /// Exports exactly `states` (entity, its state) from now on; entities not listed lose their
    /// series. An entity listed twice is exported once, with its first state.
    pub fn set_all<'a>(&self, states: impl IntoIterator<Item = (&'a str, &'static str)>) {
        let mut next: States = states.into_iter().map(|(id, s)| (id.into(), s)).collect();
        next.sort_by(|a, b| a.0.cmp(&b.0));
        next.dedup_by(|a, b| a.0 == b.0);
        *self.lock() = next;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, States> {
        self.states.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl FromSpec for StateGauge {
    fn from_spec(spec: &Spec) -> prometheus::Result<Self> {
        let [_, _] = spec.labels else {
            return Err(prometheus::Error::Msg(format!(
                "{}: a state gauge has two labels, the entity and its state",
                spec.name
            )));
        };
        let labels = spec.labels.iter().map(|l| (*l).to_owned()).collect();
        Ok(Self {
            desc: Desc::new(
                spec.name.to_owned(),
                spec.help.to_owned(),
                labels,
                Default::default(),
            )?,
            states: Arc::default(),
        })
    }
}

impl Collector for StateGauge {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let label = |name: &str, value: &str| {
            let mut pair = LabelPair::default();
            pair.set_name(name.to_owned());
            pair.set_value(value.to_owned());
            pair
        };
        let (entity, state) = (&self.desc.variable_labels[0], &self.desc.variable_labels[1]);
        let metrics = self
            .lock()
            .iter()
            .map(|(id, s)| {
                let mut gauge = Gauge::default();
                gauge.set_value(1.0);
                let mut m = Metric::default();
                m.set_label(vec![label(entity, id), label(state, s)]);
                m.set_gauge(gauge);
                m
            })
            .collect();
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::GAUGE);
        family.set_metric(metrics);
        vec![family]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauge() -> StateGauge {
        StateGauge::from_spec(&super::super::spec("t_status", "Status.").labels(&["id", "status"]))
            .unwrap()
    }

    #[test]
    fn one_series_per_entity_with_its_current_state() {
        let g = gauge();
        g.set_all([("2", "error"), ("1", "active"), ("2", "active")]);
        let families = g.collect();
        let lines: Vec<String> = families[0]
            .get_metric()
            .iter()
            .map(|m| {
                let l = m.get_label();
                format!(
                    "{}={} {}={}",
                    l[0].name(),
                    l[0].value(),
                    l[1].name(),
                    l[1].value()
                )
            })
            .collect();
        assert_eq!(lines, ["id=1 status=active", "id=2 status=error"]);
        g.set_all([("1", "inactive")]);
        let families = g.collect();
        let [m] = families[0].get_metric() else {
            panic!("one series left: {:?}", families[0].get_metric());
        };
        assert_eq!(m.get_label()[1].value(), "inactive");
    }

    #[test]
    fn a_spec_without_two_labels_is_refused() {
        let one = super::super::spec("t_x", "X.").labels(&["id"]);
        assert!(StateGauge::from_spec(&one).is_err());
    }
}
