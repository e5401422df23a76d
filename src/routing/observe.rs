//! What the metrics see of a routing table: on every publish, each slot gets
//! its metric handles (kept in the table, so a request counts through the
//! table it was routed with), and the table's gauges — routing split,
//! instance health, version — are rewritten.

use super::RouteTable;
use crate::metrics::{self, SlotView};

impl RouteTable {
    /// Attach each slot's metric handles and refresh the table gauges; call
    /// it on a table about to be published, before it is stored.
    pub fn attach_metrics(&mut self) {
        let views: Vec<SlotView<'_>> = self
            .sites
            .iter()
            .flat_map(|site| {
                site.slots
                    .iter()
                    .enumerate()
                    .map(move |(j, slot)| SlotView {
                        site: &site.name,
                        slot: &slot.name,
                        routing_percent: site.share(j as u16),
                        instances: slot
                            .pool
                            .iter()
                            .flat_map(|p| p.instances.iter())
                            .map(|i| (&*i.label, i.healthy && i.addr.is_some()))
                            .collect(),
                        ejected: slot.pool.as_ref().filter(|p| p.outlier.is_some()).map(|p| {
                            p.instances
                                .iter()
                                .map(|i| (&*i.label, i.ejected()))
                                .collect()
                        }),
                    })
            })
            .collect();
        let mut handles = metrics::observe_table(self.version, &views).into_iter();
        for slot in self.sites.iter_mut().flat_map(|s| s.slots.iter_mut()) {
            slot.metrics = handles.next();
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::metrics::tests::sample;
    use crate::routing::table::compile_toml as table;
    use std::sync::Arc;

    #[test]
    fn routing_share_matches_the_compiled_rules_and_drops_stale_series() {
        let mut t = table(
            r#"
[[sites]]
name = "metrics-share"
hostnames = ["a.test"]
[[sites.slots]]
name = "production"
instances = ["127.0.0.1:1"]
[[sites.slots]]
name = "staging"
traffic_percent = 12.5
instances = ["127.0.0.1:2"]
[[sites.slots]]
name = "qa"
traffic_percent = 0
instances = ["127.0.0.1:3"]
"#,
            &Default::default(),
        );
        let site = &t.sites[0];
        let by_name = |n: &str| {
            let i = site.slots.iter().position(|s| &*s.name == n).unwrap();
            site.share(i as u16)
        };
        assert_eq!(by_name("production"), 87.5);
        assert_eq!(by_name("staging"), 12.5);
        assert_eq!(by_name("qa"), 0.0);

        t.attach_metrics();
        assert!(t.sites[0].slots.iter().all(|s| s.metrics.is_some()));
        let text = crate::metrics::render();
        assert_eq!(
            sample(
                &text,
                r#"slotproxy_routing_percent{site="metrics-share",slot="staging"}"#
            ),
            Some(12.5)
        );
        assert_eq!(
            sample(
                &text,
                r#"slotproxy_instance_up{address="127.0.0.1:3",site="metrics-share",slot="qa"}"#
            ),
            Some(1.0)
        );

        let mut t2 = table(
            r#"
[[sites]]
name = "metrics-share"
hostnames = ["a.test"]
[[sites.slots]]
name = "production"
instances = ["127.0.0.1:1"]
"#,
            &Default::default(),
        );
        t2.attach_metrics();
        // an unchanged slot keeps its handles (and the counters they hold)
        assert!(Arc::ptr_eq(
            t.sites[0].slots[0].metrics.as_ref().unwrap(),
            t2.sites[0].slots[0].metrics.as_ref().unwrap()
        ));
        let text = crate::metrics::render();
        // Table gauges of a removed slot go; its request history stays.
        assert!(!text.contains(r#"slotproxy_routing_percent{site="metrics-share",slot="staging""#));
        assert!(!text.contains(r#"instance="127.0.0.1:2""#), "{text}");
        assert_eq!(
            sample(
                &text,
                r#"slotproxy_routing_percent{site="metrics-share",slot="production"}"#
            ),
            Some(100.0)
        );
    }
}
