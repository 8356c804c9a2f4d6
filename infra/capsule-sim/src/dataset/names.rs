//! Word lists the generator draws from. Unicode on purpose: real accounts hold it.

pub const FIRST_NAMES: &[&str] = &[
    "Scott", "Maia", "Zoë", "José", "Ingrid", "Søren", "Aoife", "Łukasz", "Chloé", "Mehmet", "Yuki", "Olusegun",
    "Priya", "Björn", "Ana", "Nguyễn", "Fatima", "Jürgen", "Siobhán", "Wei",
];
pub const LAST_NAMES: &[&str] = &[
    "Spacey",
    "Hilton",
    "Müller",
    "García",
    "O'Brien",
    "Kowalski",
    "Dubois",
    "Øvergaard",
    "Yılmaz",
    "Tanaka",
    "Adeyemi",
    "Sharma",
    "Ångström",
    "Silva",
    "Trần",
    "Haddad",
    "Schäfer",
    "Ní Bhriain",
    "Zhang",
    "Smith",
];
pub const ORG_WORDS: &[&str] = &[
    "Zestia",
    "Homestyle",
    "Northwind",
    "Acme",
    "Blåbær",
    "Café Müller",
    "Globex",
    "Initech",
    "Umbrella",
    "Stark",
    "Wayne",
    "Tyrell",
    "Soylent",
    "Hooli",
    "Vandelay",
    "Kraków Digital",
];
pub const ORG_SUFFIXES: &[&str] = &["Ltd", "GmbH", "S.A.", "Inc.", "LLP", "& Co", "AB", "株式会社"];
pub const JOB_TITLES: &[&str] =
    &["Creative Director", "CTO", "Head of Sales", "Office Manager", "Buyer", "Founder", "Analyst"];
pub const CITIES: &[(&str, &str)] = &[
    ("Chicago", "United States"),
    ("London", "United Kingdom"),
    ("München", "Germany"),
    ("São Paulo", "Brazil"),
    ("Zürich", "Switzerland"),
    ("Kraków", "Poland"),
    ("Tokyo", "Japan"),
    ("Lagos", "Nigeria"),
];
pub const DEAL_WORDS: &[&str] = &[
    "Website redesign",
    "Annual licence",
    "Consulting retainer",
    "Shopping cart",
    "Data migration",
    "Support contract",
    "Office fit-out",
    "Training day",
];
pub const TASK_WORDS: &[&str] = &[
    "Send quarterly invoice",
    "Call back",
    "Prepare proposal",
    "Chase payment",
    "Book demo",
    "Review contract",
    "First review",
    "Escalate to Management Team",
];
pub const NOTE_WORDS: &[&str] = &[
    "Met at the trade show.",
    "Asked for a quote — follow up next week.",
    "Prefers email 📧.",
    "Budget approved.",
    "Left a voicemail.",
    "Sent the brochure.",
];
pub const COUNTRIES: &[(&str, &str, i64, &str)] = &[
    ("AF", "AFG", 4, "Afghanistan"),
    ("AX", "ALA", 248, "Åland Islands"),
    ("AL", "ALB", 8, "Albania"),
    ("DZ", "DZA", 12, "Algeria"),
    ("BR", "BRA", 76, "Brazil"),
    ("CI", "CIV", 384, "Côte d'Ivoire"),
    ("DE", "DEU", 276, "Germany"),
    ("JP", "JPN", 392, "Japan"),
    ("NG", "NGA", 566, "Nigeria"),
    ("PL", "POL", 616, "Poland"),
    ("CH", "CHE", 756, "Switzerland"),
    ("GB", "GBR", 826, "United Kingdom"),
    ("US", "USA", 840, "United States"),
];
/// Code, symbol, and (name, plural name) where the docs example has them.
pub type Currency = (&'static str, &'static str, Option<(&'static str, &'static str)>);
pub const CURRENCIES: &[Currency] = &[
    ("AED", "د.إ ", None),
    ("ARS", "$", None),
    ("AUD", "$", Some(("AU Dollar", "AU Dollars"))),
    ("EUR", "€", Some(("Euro", "Euros"))),
    ("GBP", "£", Some(("British Pound", "British Pounds"))),
    ("JPY", "¥", Some(("Japanese Yen", "Japanese Yen"))),
    ("USD", "$", Some(("US Dollar", "US Dollars"))),
];
