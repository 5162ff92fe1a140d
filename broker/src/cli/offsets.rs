//! `chorus offsets TOPIC`: earliest and latest offset per partition, and the first offset
//! at or after a time.

use serde_json::json;

use super::client::Cluster;
use super::error::Result;
use super::lookup::{self, EARLIEST, LATEST};
use super::output::{or_dash, print, print_json, Format, Table};

pub async fn show(
    cluster: &mut Cluster,
    topic: &str,
    time: Option<i64>,
    format: Format,
) -> Result<()> {
    let info = lookup::topic(cluster, topic).await?;
    let all: Vec<(String, i32)> = info
        .partitions
        .iter()
        .map(|p| (topic.to_string(), p.partition))
        .collect();
    let earliest = lookup::offsets_at(cluster, &all, EARLIEST).await?;
    let latest = lookup::offsets_at(cluster, &all, LATEST).await?;
    let at = match time {
        Some(t) => Some(lookup::offsets_at(cluster, &all, t).await?),
        None => None,
    };
    // -1 from a by-time lookup: no record that recent; a consumer would start at the end.
    let at_time = |key: &(String, i32)| {
        at.as_ref()
            .and_then(|m| m.get(key).copied())
            .map(|o| if o < 0 { latest[key] } else { o })
    };
    match format {
        Format::Json => print_json(&json!(all
            .iter()
            .map(|key| {
                let mut row = json!({
                    "topic": topic,
                    "partition": key.1,
                    "earliest": earliest[key],
                    "latest": latest[key],
                });
                if let Some(o) = at_time(key) {
                    row["offset_at_time"] = json!(o);
                }
                row
            })
            .collect::<Vec<_>>())),
        Format::Table => {
            let mut header = vec!["TOPIC", "PARTITION", "EARLIEST", "LATEST"];
            if time.is_some() {
                header.push("OFFSET-AT-TIME");
            }
            let mut table = Table::new(&header);
            for key in &all {
                let mut row = vec![
                    topic.to_string(),
                    key.1.to_string(),
                    earliest[key].to_string(),
                    latest[key].to_string(),
                ];
                if time.is_some() {
                    row.push(or_dash(at_time(key)));
                }
                table.push(row);
            }
            print(&table.render())
        }
    }
}
