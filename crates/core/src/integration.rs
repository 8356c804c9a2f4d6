//! An integration: one Capsule account, a name, the tables and columns wanted, and how often and
//! how far back to sync. Stored by the state port (state file or DynamoDB).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::catalog::{self, ColumnSelection, TableSpec};
use crate::{Result, SyncError};

/// Capsule's production API.
pub const DEFAULT_BASE_URL: &str = "https://api.capsulecrm.com/api/v2";

/// Where an integration's Capsule token comes from. Only the location is stored, never the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TokenSource {
    /// An environment variable holding the token.
    Env { var: String },
    /// A file holding the token (surrounding whitespace ignored).
    File { path: PathBuf },
    /// An AWS Secrets Manager secret holding a JSON document.
    SecretsManager { secret_id: String },
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::Env { var } => write!(f, "env:{var}"),
            TokenSource::File { path } => write!(f, "file:{}", path.display()),
            TokenSource::SecretsManager { secret_id } => write!(f, "secretsmanager:{secret_id}"),
        }
    }
}

impl std::str::FromStr for TokenSource {
    type Err = SyncError;

    /// `env:VAR`, `file:PATH` or `secretsmanager:SECRET_ID`.
    fn from_str(s: &str) -> Result<TokenSource> {
        let bad = || {
            SyncError::Config(format!("token source `{s}` is not one of env:VAR, file:PATH, secretsmanager:SECRET_ID"))
        };
        if s.contains('@') {
            return Err(SyncError::Config(format!(
                "token source `{}` looks like an email or username and password; Capsule API v2 accepts only \
                 Bearer tokens. Create a personal access token in Capsule (My Preferences > API Authentication \
                 Tokens), put it in an environment variable or a file, and use --token env:VAR or --token file:PATH",
                s.split('@').next().unwrap_or_default()
            )));
        }
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        if rest.trim().is_empty() {
            return Err(bad());
        }
        match kind {
            "env" => Ok(TokenSource::Env { var: rest.to_string() }),
            "file" => Ok(TokenSource::File { path: PathBuf::from(rest) }),
            "secretsmanager" | "secret" => Ok(TokenSource::SecretsManager { secret_id: rest.to_string() }),
            _ => Err(bad()),
        }
    }
}

/// Lifecycle state of an integration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum IntegrationStatus {
    /// Created; no table has loaded yet.
    #[default]
    Pending,
    /// At least one table run succeeded.
    Active,
    /// Never dispatched until resumed.
    Paused,
}

impl IntegrationStatus {
    /// The name shown by the CLI and stored (`pending`, `active`, `paused`).
    pub fn as_str(self) -> &'static str {
        match self {
            IntegrationStatus::Pending => "pending",
            IntegrationStatus::Active => "active",
            IntegrationStatus::Paused => "paused",
        }
    }
}

impl fmt::Display for IntegrationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How fanned-out tables (tracks) find their parents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FanOutMode {
    /// Only parents the catalog's discovery listing names (tracks: parents of tasks with `hasTrack`).
    #[default]
    Discover,
    /// Every possible parent: one request per opportunity and case.
    Exhaustive,
}

impl FanOutMode {
    /// The name the config and `--fan-out` use.
    pub fn as_str(self) -> &'static str {
        match self {
            FanOutMode::Discover => "discover",
            FanOutMode::Exhaustive => "exhaustive",
        }
    }
}

impl fmt::Display for FanOutMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub(crate) fn default_history_start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap()
}

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_string()
}

fn default_lookback() -> u32 {
    10
}

fn default_rate_reserve() -> u8 {
    10
}

fn default_frequency() -> u32 {
    24 * 60
}

/// Which tables an integration syncs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(from = "Vec<String>", into = "Vec<String>")]
pub enum TableSelection {
    /// Every table of the catalog (those a later version adds too). Stored as `[]`.
    #[default]
    All,
    /// These tables, by catalog name (checked when the integration is validated).
    Only(Vec<String>),
}

impl TableSelection {
    /// The catalog entries selected (unknown names are refused, listing the valid ones).
    pub fn resolve(&self) -> Result<Vec<&'static TableSpec>> {
        match self {
            TableSelection::All => Ok(catalog::TABLES.iter().collect()),
            TableSelection::Only(names) => catalog::resolve_tables(names),
        }
    }
}

impl From<Vec<String>> for TableSelection {
    fn from(names: Vec<String>) -> TableSelection {
        if names.is_empty() { TableSelection::All } else { TableSelection::Only(names) }
    }
}

impl From<TableSelection> for Vec<String> {
    fn from(selection: TableSelection) -> Vec<String> {
        match selection {
            TableSelection::All => Vec::new(),
            TableSelection::Only(names) => names,
        }
    }
}

impl FromIterator<String> for TableSelection {
    fn from_iter<T: IntoIterator<Item = String>>(names: T) -> TableSelection {
        names.into_iter().collect::<Vec<_>>().into()
    }
}

/// One Capsule account to sync.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Integration {
    /// Unique, immutable; the output prefix. Lower-case letters, digits, `-` and `_`, 1–63 chars.
    pub name: IntegrationName,
    /// Capsule API base URL.
    #[serde(default = "default_base_url")]
    pub api_base_url: String,
    /// Where the token is read from.
    pub token: TokenSource,
    /// Tables to sync (stored as a list of catalog names, `[]` for all).
    #[serde(default)]
    pub tables: TableSelection,
    /// Columns per table; a table not listed gets every column.
    #[serde(default)]
    pub columns: BTreeMap<String, Vec<String>>,
    /// The first run of an incremental table asks for changes since this instant.
    #[serde(default = "default_history_start")]
    pub history_start: DateTime<Utc>,
    /// Incremental runs re-read this many minutes before the previous run's start, so a record
    /// changed while that run was paging (or a clock skew) is never missed.
    #[serde(default = "default_lookback")]
    pub lookback_minutes: u32,
    /// Share of Capsule's hourly rate limit (per cent) left unused for the account's other tools.
    #[serde(default = "default_rate_reserve")]
    pub rate_reserve_percent: u8,
    /// How often the scheduler syncs this integration.
    #[serde(default = "default_frequency")]
    pub frequency_minutes: u32,
    /// Parent discovery for fanned-out tables.
    #[serde(default)]
    pub fan_out: FanOutMode,
    /// Recent-window reads of the full tables that allow them (entries, tracks): see
    /// the engine's `engine::recent`. None: every run reads those tables whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent_window: Option<RecentWindow>,
    #[serde(default)]
    pub status: IntegrationStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Every change made to the settings, oldest first.
    #[serde(default)]
    pub changes: Vec<Change>,
    /// Backfills ordered, per table: a counter an edit raises in the same write as the change
    /// that needs it. A bookmark written under a lower count is not read from (the table's next
    /// run starts from the history start), so a backfill ordered while a run is in flight — even
    /// a first load, which has no bookmark to drop — takes effect on the run after it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub backfills: BTreeMap<String, u64>,
    /// The REST hook subscription (`capsule-sync hooks subscribe`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<crate::hooks::HookSettings>,
}

/// Recent-window mode: a run reads only what can have changed since the previous run (the
/// newest entries, the tracks of parents whose tasks changed) and carries the rest over from the
/// previous snapshot; everything is read again every `full_refresh_days` (entries whole, tracks a
/// slice of their parents a day).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentWindow {
    /// Days within which everything is read again (catching what a window cannot: see the README).
    pub full_refresh_days: u32,
}

impl RecentWindow {
    /// The longest period between whole reads accepted.
    pub(crate) const MAX_FULL_REFRESH_DAYS: u32 = 90;

    fn validate(&self) -> Result<()> {
        if !(1..=Self::MAX_FULL_REFRESH_DAYS).contains(&self.full_refresh_days) {
            return Err(SyncError::Config(format!(
                "recent_window.full_refresh_days {} must be between 1 and {}",
                self.full_refresh_days,
                Self::MAX_FULL_REFRESH_DAYS
            )));
        }
        Ok(())
    }
}

impl fmt::Display for RecentWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "full refresh every {} days", self.full_refresh_days)
    }
}

/// Parses `--recent-window`: `off`, or the days between whole reads (`7`, `7d`).
pub fn parse_recent_window(text: &str) -> Result<Option<RecentWindow>> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let days: u32 = t.trim_end_matches('d').parse().map_err(|_| {
        SyncError::Config(format!("recent window `{text}` is not `off` or a number of days between full refreshes"))
    })?;
    let window = RecentWindow { full_refresh_days: days };
    window.validate()?;
    Ok(Some(window))
}

/// One recorded change of an integration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub at: DateTime<Utc>,
    /// What changed, e.g. `tables: +tasks`, `paused`.
    pub what: String,
}

impl Integration {
    /// A new integration with defaults for everything but name and token.
    pub fn new(name: IntegrationName, token: TokenSource, now: DateTime<Utc>) -> Integration {
        Integration {
            name,
            api_base_url: default_base_url(),
            token,
            tables: TableSelection::All,
            columns: BTreeMap::new(),
            history_start: default_history_start(),
            lookback_minutes: default_lookback(),
            rate_reserve_percent: default_rate_reserve(),
            frequency_minutes: default_frequency(),
            fan_out: FanOutMode::default(),
            recent_window: None,
            status: IntegrationStatus::Pending,
            created_at: now,
            updated_at: now,
            changes: vec![Change { at: now, what: "created".into() }],
            backfills: BTreeMap::new(),
            hooks: None,
        }
    }

    /// The backfill count of `table` (see [`Integration::backfills`]).
    pub fn backfill_generation(&self, table: &str) -> u64 {
        self.backfills.get(table).copied().unwrap_or(0)
    }

    /// Orders a backfill of `table`: its next run after the current one reads from the history start.
    pub fn order_backfill(&mut self, table: &str) {
        *self.backfills.entry(table.to_string()).or_default() += 1;
    }

    /// Records a change and bumps `updated_at`.
    pub fn record_change(&mut self, what: impl Into<String>, now: DateTime<Utc>) {
        self.changes.push(Change { at: now, what: what.into() });
        self.updated_at = now;
    }

    /// Checks every setting against the catalog and sane bounds; the error names the setting.
    pub fn validate(&self) -> Result<()> {
        url::Url::parse(&self.api_base_url)
            .map_err(|e| SyncError::Config(format!("api_base_url `{}` is not a URL: {e}", self.api_base_url)))?;
        let tables = self.tables.resolve()?;
        for (table, columns) in &self.columns {
            let spec = catalog::table(table).ok_or_else(|| {
                SyncError::Config(format!(
                    "columns given for unknown table `{table}`; valid tables: {}",
                    catalog::table_names().join(", ")
                ))
            })?;
            catalog::resolve_columns(spec, columns)?;
        }
        // Capsule's timestamps have second precision: without a lookback, a change made in the
        // same second as a run's start could be missed.
        if !tables.is_empty() && !(1..=7 * 24 * 60).contains(&self.lookback_minutes) {
            return Err(SyncError::Config(format!(
                "lookback_minutes {} must be between 1 and 10080 (a week)",
                self.lookback_minutes
            )));
        }
        if self.rate_reserve_percent > 50 {
            return Err(SyncError::Config(format!(
                "rate_reserve_percent {} must be between 0 and 50 (per cent of Capsule's hourly limit)",
                self.rate_reserve_percent
            )));
        }
        if !(5..=31 * 24 * 60).contains(&self.frequency_minutes) {
            return Err(SyncError::Config(format!(
                "frequency_minutes {} must be between 5 and 44640 (31 days)",
                self.frequency_minutes
            )));
        }
        if let Some(window) = &self.recent_window {
            window.validate()?;
        }
        if self.history_start > Utc::now() {
            return Err(SyncError::Config(format!("history_start {} is in the future", self.history_start)));
        }
        Ok(())
    }

    /// The selected tables, in catalog order.
    pub fn selected_tables(&self) -> Result<Vec<&'static TableSpec>> {
        let mut tables = self.tables.resolve()?;
        tables.sort_by_key(|t| catalog::TABLES.iter().position(|c| c.name == t.name));
        Ok(tables)
    }

    /// The selected columns of one table.
    pub fn column_selection(&self, table: &TableSpec) -> Result<ColumnSelection> {
        let requested = self.columns.get(table.name).cloned().unwrap_or_default();
        catalog::resolve_columns(table, &requested)
    }
}

/// Parses a replication frequency: `90` (minutes), `30m`, `6h`, `1d`.
pub fn parse_frequency(text: &str) -> Result<u32> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "m"),
    };
    let n: u32 = number.parse().map_err(|_| bad_frequency(text))?;
    let minutes = match unit {
        "m" | "min" => Some(n),
        "h" => n.checked_mul(60),
        "d" => n.checked_mul(24 * 60),
        _ => None,
    }
    .ok_or_else(|| bad_frequency(text))?;
    if !(5..=31 * 24 * 60).contains(&minutes) {
        return Err(SyncError::Config(format!("frequency `{text}` must be between 5m and 31d")));
    }
    Ok(minutes)
}

fn bad_frequency(text: &str) -> SyncError {
    SyncError::Config(format!("frequency `{text}` is not a duration like 30m, 6h or 1d"))
}

/// Parses a history start: `2024-01-31` (midnight UTC) or an RFC 3339 timestamp.
pub fn parse_history_start(text: &str) -> Result<DateTime<Utc>> {
    let t = text.trim();
    if let Ok(ts) = DateTime::parse_from_rfc3339(t) {
        return Ok(ts.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
        .map_err(|_| {
            SyncError::Config(format!("history start `{text}` is not a date (2024-01-31) or RFC 3339 timestamp"))
        })
}

/// An integration's name: unique, immutable, the output prefix, part of every state key. Only a
/// valid name (lower-case letters, digits, `-` and `_`, 1–63 characters) is ever one, whether typed by an operator or read back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IntegrationName(String);

/// Why a string is not an [`IntegrationName`] (the bare reason, for serde to wrap).
#[derive(Debug)]
pub struct InvalidName(String);

impl fmt::Display for InvalidName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl IntegrationName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IntegrationName {
    type Error = InvalidName;
    fn try_from(name: String) -> std::result::Result<IntegrationName, InvalidName> {
        match name_problem(&name) {
            None => Ok(IntegrationName(name)),
            Some(problem) => Err(InvalidName(problem)),
        }
    }
}

impl std::str::FromStr for IntegrationName {
    type Err = SyncError;
    fn from_str(name: &str) -> Result<IntegrationName> {
        IntegrationName::try_from(name.to_string()).map_err(|e| SyncError::Config(e.0))
    }
}

impl From<IntegrationName> for String {
    fn from(name: IntegrationName) -> String {
        name.0
    }
}

impl std::ops::Deref for IntegrationName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for IntegrationName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for IntegrationName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IntegrationName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for IntegrationName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for IntegrationName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for IntegrationName {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

/// Names become S3 prefixes, DynamoDB keys and directory names: keep them boring.
fn name_problem(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    (!ok).then(|| {
        format!(
            "integration name `{name}` is invalid: use 1-63 lower-case letters, digits, `-` or `_`, starting with a letter or digit"
        )
    })
}

/// What starts the suffix of a hook run's id (warehouse views tell hook runs by it).
pub const HOOK_RUN_MARK: &str = "hook";

/// A run id: `20261128T081100Z-3fa9c1`. Sorts by start time; the date part is the `dt=` partition,
/// so a retry of the same run id writes exactly the same keys.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RunId(String);

impl RunId {
    pub fn new(now: DateTime<Utc>) -> RunId {
        let suffix: u32 = rand::rng().random_range(0..0x100_0000);
        RunId(format!("{}-{suffix:06x}", now.format("%Y%m%dT%H%M%SZ")))
    }

    /// The id of a hook run (rows of REST hook deliveries): `20261128T081100Z-hook3fa9c1`. A
    /// batch run's suffix is hex, so `hook` never starts one.
    pub fn hook(now: DateTime<Utc>) -> RunId {
        let suffix: u32 = rand::rng().random_range(0..0x100_0000);
        RunId(format!("{}-{HOOK_RUN_MARK}{suffix:06x}", now.format("%Y%m%dT%H%M%SZ")))
    }

    /// Whether the run landed REST hook deliveries rather than read Capsule.
    pub fn is_hook(&self) -> bool {
        self.0[17..].starts_with(HOOK_RUN_MARK)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// When the run started (from the id itself).
    pub fn started_at(&self) -> DateTime<Utc> {
        let stamp = &self.0[..16];
        NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ").expect("validated on construction").and_utc()
    }

    /// The `dt=YYYY-MM-DD` partition value.
    pub fn partition_date(&self) -> String {
        self.started_at().format("%Y-%m-%d").to_string()
    }
}

impl TryFrom<String> for RunId {
    type Error = SyncError;

    fn try_from(s: String) -> Result<RunId> {
        let valid = s.len() >= 18
            && s.is_char_boundary(16)
            && NaiveDateTime::parse_from_str(&s[..16], "%Y%m%dT%H%M%SZ").is_ok()
            && s.as_bytes()[16] == b'-'
            && s[17..].chars().all(|c| c.is_ascii_alphanumeric());
        if valid {
            Ok(RunId(s))
        } else {
            Err(SyncError::Config(format!("run id `{s}` is not of the form 20261128T081100Z-3fa9c1")))
        }
    }
}

impl std::str::FromStr for RunId {
    type Err = SyncError;
    fn from_str(s: &str) -> Result<RunId> {
        RunId::try_from(s.to_string())
    }
}

impl From<RunId> for String {
    fn from(r: RunId) -> String {
        r.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_round_trip_and_sort_by_time() {
        let a = RunId::new(Utc.with_ymd_and_hms(2026, 11, 28, 8, 11, 0).unwrap());
        let b = RunId::new(Utc.with_ymd_and_hms(2026, 11, 28, 9, 0, 0).unwrap());
        assert!(a < b);
        assert_eq!(a.partition_date(), "2026-11-28");
        assert_eq!(a.as_str().parse::<RunId>().unwrap(), a);
        assert!("yesterday".parse::<RunId>().is_err());
        assert!("20261128T081100Z".parse::<RunId>().is_err());
    }

    #[test]
    fn names_are_checked() {
        for good in ["acme", "acme-prod_2", "9lives"] {
            assert!(good.parse::<IntegrationName>().is_ok(), "{good}");
        }
        for bad in ["", "Acme", "acme corp", "-acme", "a/b", &"x".repeat(64)] {
            let err = bad.parse::<IntegrationName>().unwrap_err().to_string();
            assert!(err.contains("invalid"), "{bad}: {err}");
        }
    }

    #[test]
    fn frequencies_and_history_starts_parse() {
        assert_eq!(parse_frequency("30m").unwrap(), 30);
        assert_eq!(parse_frequency("6h").unwrap(), 360);
        assert_eq!(parse_frequency("1d").unwrap(), 1440);
        assert_eq!(parse_frequency("90").unwrap(), 90);
        for bad in ["", "often", "1m", "6w", "99999d"] {
            assert!(parse_frequency(bad).unwrap_err().to_string().contains("frequency"), "{bad}");
        }
        assert_eq!(parse_history_start("2024-01-31").unwrap().to_rfc3339(), "2024-01-31T00:00:00+00:00");
        assert!(parse_history_start("2024-01-31T10:00:00+02:00").is_ok());
        assert!(parse_history_start("last year").is_err());
    }

    #[test]
    fn token_sources_parse() {
        assert_eq!(
            "env:CAPSULE_TOKEN".parse::<TokenSource>().unwrap(),
            TokenSource::Env { var: "CAPSULE_TOKEN".into() }
        );
        assert!(matches!("file:/tmp/t".parse::<TokenSource>().unwrap(), TokenSource::File { .. }));
        assert!("password:hunter2".parse::<TokenSource>().is_err());
        assert!("env:".parse::<TokenSource>().is_err());
    }

    #[test]
    fn an_integration_name_is_valid_or_it_is_not_one() {
        let name: IntegrationName = "acme-eu_2".parse().unwrap();
        assert_eq!(serde_json::to_value(&name).unwrap(), "acme-eu_2", "stored as the plain string");
        assert_eq!(name, "acme-eu_2");
        for bad in ["\"Acme\"", "\"a/b\"", "\"\""] {
            let err = serde_json::from_str::<IntegrationName>(bad).unwrap_err().to_string();
            assert!(err.contains("is invalid"), "{bad}: {err}");
        }
        let stored = serde_json::to_value(Integration::new(name, TokenSource::Env { var: "T".into() }, Utc::now()));
        let mut stored = stored.unwrap();
        stored["name"] = "ACME#1".into();
        let err = serde_json::from_value::<Integration>(stored).unwrap_err().to_string();
        assert!(err.contains("integration name `ACME#1` is invalid"), "{err}");
    }

    #[test]
    fn validation_names_the_bad_setting() {
        let mut i = Integration::new("acme".parse().unwrap(), TokenSource::Env { var: "T".into() }, Utc::now());
        assert!(i.validate().is_ok());
        i.tables = TableSelection::Only(vec!["partys".into()]);
        assert!(i.validate().unwrap_err().to_string().contains("unknown table `partys`"));
        i.tables = TableSelection::Only(vec!["parties".into()]);
        i.columns.insert("parties".into(), vec!["nope".into()]);
        let err = i.validate().unwrap_err().to_string();
        assert!(err.contains("unknown column `nope`") && err.contains("updatedAt"), "{err}");
        i.columns.clear();
        i.frequency_minutes = 1;
        assert!(i.validate().unwrap_err().to_string().contains("frequency_minutes"));
    }
}
