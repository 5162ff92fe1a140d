//! The operator commands of the `chorus` binary: topics, groups, offsets, produce and
//! consume. Each speaks the Kafka protocol to `--bootstrap-server` through [`client`], so
//! the same commands work against Apache Kafka and Redpanda.
//!
//! Layout: `client` (connections, version negotiation, routing to leaders and
//! coordinators), `lookup` (partitions, offsets by time), one module per command family,
//! `member` (the classic group member `consume --group` uses), `output` (tables and JSON),
//! `time` (datetimes and durations), `error` (what the operator is told).

pub mod client;
pub mod consume;
pub mod error;
pub mod groups;
pub mod lookup;
pub mod member;
pub mod offsets;
pub mod output;
pub mod produce;
pub mod time;
pub mod topics;

use std::time::Duration;

use chorus_storage::codec::Compression;
use clap::{Args, Subcommand};

use client::Cluster;
use error::{CliError, Result};
use output::Format;

/// Where to connect and how to print; shared by every client command.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Broker to bootstrap from (HOST:PORT, or several separated by commas).
    #[arg(
        long,
        global = true,
        env = "CHORUS_BOOTSTRAP_SERVER",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap_server: String,

    /// `table` for people, `json` for scripts.
    #[arg(long, global = true, value_enum, default_value = "table")]
    pub output: Format,

    /// How long to wait for any one answer from a broker.
    #[arg(long, global = true, default_value_t = 30_000)]
    pub timeout_ms: u64,
}

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create a topic.
    ///
    /// Examples:
    ///   chorus topics create orders --partitions 6
    ///   chorus topics create audit --partitions 1 --config cleanup.policy=compact --config retention.ms=-1
    Create {
        name: String,
        /// Partition count (default: the broker's num.partitions).
        #[arg(long)]
        partitions: Option<i32>,
        /// Replication factor (default: the broker's).
        #[arg(long)]
        replication_factor: Option<i16>,
        /// A topic config, KEY=VALUE (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// Succeed when the topic already exists.
        #[arg(long)]
        if_not_exists: bool,
    },
    /// List topics with their partition counts.
    ///
    /// Example:
    ///   chorus topics list --output json
    List {
        /// Include internal topics such as __consumer_offsets.
        #[arg(long)]
        include_internal: bool,
    },
    /// Show a topic's partitions, leaders, log start/end offsets and non-default configs.
    ///
    /// Example:
    ///   chorus topics describe orders
    Describe { name: String },
    /// Add partitions or change configs.
    ///
    /// Examples:
    ///   chorus topics alter orders --partitions 12
    ///   chorus topics alter orders --config retention.ms=86400000 --delete-config segment.bytes
    Alter {
        name: String,
        /// The new, larger partition count.
        #[arg(long)]
        partitions: Option<i32>,
        /// Set a config, KEY=VALUE (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// Return a config to its default (repeatable).
        #[arg(long = "delete-config", value_name = "KEY")]
        delete_configs: Vec<String>,
    },
    /// Delete topics.
    ///
    /// Example:
    ///   chorus topics delete orders
    Delete {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum GroupsCommand {
    /// List consumer groups with state, type, protocol and member count.
    ///
    /// Example:
    ///   chorus groups list
    List,
    /// Show a group: one row per partition with its committed offset, log end and lag.
    ///
    /// Examples:
    ///   chorus groups describe billing
    ///   chorus groups describe billing --members
    ///   chorus groups describe billing --output json
    Describe {
        group: String,
        /// One row per member instead.
        #[arg(long, conflicts_with = "state")]
        members: bool,
        /// The group's state, coordinator and assignor.
        #[arg(long)]
        state: bool,
    },
    /// Delete empty groups and their offsets.
    ///
    /// Example:
    ///   chorus groups delete old-billing
    Delete {
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Delete a group's committed offsets for topics it no longer consumes.
    ///
    /// Example:
    ///   chorus groups delete-offsets billing --topic retired-topic
    DeleteOffsets {
        group: String,
        /// TOPIC or TOPIC:PARTITION[,PARTITION...] (repeatable).
        #[arg(long = "topic", required = true, value_name = "TOPIC[:P,P]")]
        topics: Vec<String>,
    },
    /// Move a group's committed offsets. Prints the plan; applies it only with --execute.
    /// Refuses while the group has active members.
    ///
    /// Examples:
    ///   chorus groups reset-offsets billing --topic orders --to-earliest
    ///   chorus groups reset-offsets billing --all-topics --to-datetime 2026-11-23T10:00:00.000 --execute
    ///   chorus groups reset-offsets billing --topic orders:0,1 --shift-by -100 --execute
    ResetOffsets(ResetArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("scope").required(true).args(["topics", "all_topics"])))]
#[command(group(clap::ArgGroup::new("target").required(true).args([
    "to_earliest", "to_latest", "to_current", "to_offset", "to_datetime", "by_duration", "shift_by",
])))]
pub struct ResetArgs {
    group: String,
    /// TOPIC or TOPIC:PARTITION[,PARTITION...] (repeatable).
    #[arg(long = "topic", value_name = "TOPIC[:P,P]")]
    topics: Vec<String>,
    /// Every topic the group has committed offsets for.
    #[arg(long)]
    all_topics: bool,
    #[arg(long)]
    to_earliest: bool,
    #[arg(long)]
    to_latest: bool,
    /// Keep the committed offsets (commits the end where there is none).
    #[arg(long)]
    to_current: bool,
    /// An absolute offset (clamped into each log).
    #[arg(long, allow_negative_numbers = true)]
    to_offset: Option<i64>,
    /// The first offset at or after this time: YYYY-MM-DDTHH:mm:SS.sss[Z|+HH:MM] or epoch ms.
    #[arg(long)]
    to_datetime: Option<String>,
    /// The first offset at or after now minus this ISO-8601 duration (PT30M, P1DT2H).
    #[arg(long)]
    by_duration: Option<String>,
    /// Move each committed offset by N (negative moves back).
    #[arg(long, allow_negative_numbers = true)]
    shift_by: Option<i64>,
    /// Apply the plan (the default is a dry run).
    #[arg(long, conflicts_with = "dry_run")]
    execute: bool,
    /// Only print the plan (the default).
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Args)]
pub struct OffsetsArgs {
    topic: String,
    /// Also show the first offset at or after this time (datetime or epoch ms).
    #[arg(long)]
    time: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    topic: String,
    /// Split each line at the first SEP into key and value.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// A header on every record, KEY=VALUE (repeatable).
    #[arg(long = "header", value_name = "KEY=VALUE")]
    headers: Vec<String>,
    /// all (or -1), 1 or 0.
    #[arg(long, default_value = "all")]
    acks: String,
    /// Send every record to this partition.
    #[arg(long)]
    partition: Option<i32>,
    #[arg(long, value_enum, default_value = "none")]
    compression: Codec,
    /// Lines per request.
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    topic: String,
    /// Consume as a member of this group, committing what was printed.
    #[arg(long)]
    group: Option<String>,
    /// Start at the beginning when there is no committed offset (default: the end).
    #[arg(long)]
    from_beginning: bool,
    /// Start at this offset (clamped into each log) when there is no committed offset.
    #[arg(long, conflicts_with = "from_beginning")]
    offset: Option<i64>,
    /// Read only this partition (not with --group).
    #[arg(long, conflicts_with = "group")]
    partition: Option<i32>,
    /// Exit after this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Exit once every partition has been read to its end.
    #[arg(long)]
    exit_at_end: bool,
    /// kcat-style format: %t topic, %p partition, %o offset, %k key, %v value,
    /// %T timestamp, %h headers, \n, \t.
    #[arg(long, default_value = "%v\\n")]
    format: String,
}

/// The client commands, as `main` hands them over.
#[derive(Debug)]
pub enum Command {
    Topics(TopicsCommand),
    Groups(GroupsCommand),
    Offsets(OffsetsArgs),
    Produce(ProduceArgs),
    Consume(ConsumeArgs),
}

/// Runs one command to completion on a small runtime of its own.
pub fn run(args: &ClientArgs, command: Command) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    runtime.block_on(execute(args, command))
}

async fn execute(args: &ClientArgs, command: Command) -> Result<()> {
    let timeout = Duration::from_millis(args.timeout_ms);
    let mut cluster = Cluster::connect(&args.bootstrap_server, timeout).await?;
    let c = &mut cluster;
    let format = args.output;
    let timeout_ms = args.timeout_ms.min(i32::MAX as u64) as i32;
    match command {
        Command::Topics(t) => match t {
            TopicsCommand::Create {
                name,
                partitions,
                replication_factor,
                configs,
                if_not_exists,
            } => {
                topics::create(
                    c,
                    &name,
                    partitions,
                    replication_factor,
                    &configs,
                    if_not_exists,
                    timeout_ms,
                )
                .await
            }
            TopicsCommand::List { include_internal } => {
                topics::list(c, include_internal, format).await
            }
            TopicsCommand::Describe { name } => topics::describe(c, &name, format).await,
            TopicsCommand::Alter {
                name,
                partitions,
                configs,
                delete_configs,
            } => topics::alter(c, &name, partitions, &configs, &delete_configs, timeout_ms).await,
            TopicsCommand::Delete { names } => topics::delete(c, &names, timeout_ms).await,
        },
        Command::Groups(g) => match g {
            GroupsCommand::List => groups::list(c, format).await,
            GroupsCommand::Describe {
                group,
                members,
                state,
            } => {
                let view = if members {
                    groups::DescribeView::Members
                } else if state {
                    groups::DescribeView::State
                } else {
                    groups::DescribeView::Offsets
                };
                groups::describe(c, &group, view, format).await
            }
            GroupsCommand::Delete { groups: names } => groups::delete(c, &names).await,
            GroupsCommand::DeleteOffsets { group, topics } => {
                let scopes = topics
                    .iter()
                    .map(|t| groups::parse_topic_scope(t))
                    .collect::<Result<Vec<_>>>()?;
                groups::delete_offsets(c, &group, &scopes).await
            }
            GroupsCommand::ResetOffsets(r) => {
                let scopes = r
                    .topics
                    .iter()
                    .map(|t| groups::parse_topic_scope(t))
                    .collect::<Result<Vec<_>>>()?;
                let to = reset_target(&r)?;
                let scope = (!r.all_topics).then_some(scopes.as_slice());
                groups::reset_offsets(c, &r.group, scope, to, r.execute, format).await
            }
        },
        Command::Offsets(o) => {
            let time = o
                .time
                .as_deref()
                .map(|t| time::parse_datetime("--time", t))
                .transpose()?;
            offsets::show(c, &o.topic, time, format).await
        }
        Command::Produce(p) => {
            let acks = match p.acks.as_str() {
                "all" | "-1" => -1,
                "1" => 1,
                "0" => 0,
                other => {
                    return Err(CliError::InvalidArgument {
                        arg: "--acks",
                        value: other.to_string(),
                        reason: "expected all, -1, 1 or 0",
                    })
                }
            };
            let headers = p
                .headers
                .iter()
                .map(|h| topics::key_value("--header", h))
                .collect::<Result<Vec<_>>>()?;
            if p.batch_size == 0 {
                return Err(CliError::InvalidArgument {
                    arg: "--batch-size",
                    value: "0".into(),
                    reason: "must be at least 1",
                });
            }
            let opts = produce::ProduceOptions {
                key_separator: p.key_separator,
                headers,
                acks,
                partition: p.partition,
                compression: match p.compression {
                    Codec::None => Compression::None,
                    Codec::Gzip => Compression::Gzip,
                    Codec::Snappy => Compression::Snappy,
                    Codec::Lz4 => Compression::Lz4,
                    Codec::Zstd => Compression::Zstd,
                },
                batch_records: p.batch_size,
                timeout_ms,
            };
            produce::run(c, &p.topic, &opts).await
        }
        Command::Consume(k) => {
            let opts = consume::ConsumeOptions {
                group: k.group,
                from_beginning: k.from_beginning,
                offset: k.offset,
                partition: k.partition,
                max_messages: k.max_messages,
                exit_at_end: k.exit_at_end,
                format: k.format,
                output: format,
            };
            consume::run(c, &k.topic, &opts).await
        }
    }
}

fn reset_target(r: &ResetArgs) -> Result<groups::ResetTo> {
    use groups::ResetTo;
    Ok(if r.to_earliest {
        ResetTo::Earliest
    } else if r.to_latest {
        ResetTo::Latest
    } else if r.to_current {
        ResetTo::Current
    } else if let Some(o) = r.to_offset {
        ResetTo::Offset(o)
    } else if let Some(t) = &r.to_datetime {
        ResetTo::Time(time::parse_datetime("--to-datetime", t)?)
    } else if let Some(d) = &r.by_duration {
        ResetTo::Duration(time::parse_duration("--by-duration", d)?)
    } else if let Some(n) = r.shift_by {
        ResetTo::ShiftBy(n)
    } else {
        // clap requires one of the target flags.
        ResetTo::Current
    })
}
