//! What an account's generated records are made from, so that they need not be kept.
//!
//! A generated record is made from the blueprint (the seed, the account's sizes and the
//! reference data records copy) and its [`Recipe`] (which record of which collection), with a
//! random stream of its own: the same text every time it is read, whatever was made before it.
//! The account keeps, per generated record, its id, `updatedAt` and recipe (~40 bytes), not its
//! text (~1 KB): a million-party account fits in a couple of hundred MiB, and a page costs the
//! making of its own records. A record that changes is kept as text from then on
//! ([`super::Stored`]).
//!
//! Every generated record owns a block of [`ID_BLOCK`] ids, by its position among all the
//! account's generated records: its id is the block's first, and what it nests (phone numbers,
//! field values, a track's tasks) takes ids further inside. Ids grow with gaps, like a real
//! account's, and never collide. A reference to a record (`party`, `organisation`, …) is made
//! from the record's identity stream alone ([`Blueprint::identity`]), without making the record.

use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::generate::{self, Fresh, Gen, Source};
use super::reference::Reference;
use super::{Entity, RefFields};

/// Ids each generated record owns: itself and up to ten nested ids (a party with every
/// optional part), each a random 1–3 after the last; `Gen::id` refuses to leave the block.
pub(crate) const ID_BLOCK: i64 = 32;

/// The first generated id.
const FIRST_ID: i64 = 100_000;

/// The two random streams of a generated record: its body, and its identity (what references
/// to it copy), apart so a reference can be made without making the record.
const BODY_STREAM: u64 = 0;
const IDENTITY_STREAM: u64 = 1;

/// What is drawn once per account, on streams no record's position reaches.
#[derive(Clone, Copy)]
pub(crate) enum AccountStream {
    /// The reference data (users' last logins).
    Reference = 0,
    /// The deletions before the epoch.
    History = 1,
}

/// How many records each generated collection holds, from the party count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sizes {
    pub parties: u32,
    pub opportunities: u32,
    pub kases: u32,
    pub tasks: u32,
    pub entries: u32,
}

impl Sizes {
    /// The demo's proportions: a quarter as many opportunities, a tenth as many cases, half as
    /// many tasks (plus those on tracks), as many entries.
    fn of(parties: usize) -> Sizes {
        let parties = u32::try_from(parties).expect("a party count below 4 billion");
        Sizes { parties, opportunities: parties / 4, kases: parties.div_ceil(10), tasks: parties / 2, entries: parties }
    }

    pub fn of_entity(&self, entity: Entity) -> u32 {
        match entity {
            Entity::Parties => self.parties,
            Entity::Opportunities => self.opportunities,
            Entity::Kases => self.kases,
        }
    }

    pub(crate) fn of_collection(&self, collection: Collection) -> u32 {
        match collection {
            Collection::Parties => self.parties,
            Collection::Opportunities | Collection::OpportunityTracks => self.opportunities,
            Collection::Kases | Collection::KaseTracks => self.kases,
            Collection::Tasks => self.tasks,
            Collection::Entries => self.entries,
        }
    }
}

/// The generated collections, in id order. `OpportunityTracks`' record `i` is the tracks (and
/// their tasks) on opportunity `i`: none on most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Collection {
    Parties,
    Opportunities,
    Kases,
    Tasks,
    OpportunityTracks,
    KaseTracks,
    Entries,
}

impl Collection {
    const IN_ID_ORDER: [Collection; 7] = [
        Collection::Parties,
        Collection::Opportunities,
        Collection::Kases,
        Collection::Tasks,
        Collection::OpportunityTracks,
        Collection::KaseTracks,
        Collection::Entries,
    ];

    pub fn of_entity(entity: Entity) -> Collection {
        match entity {
            Entity::Parties => Collection::Parties,
            Entity::Opportunities => Collection::Opportunities,
            Entity::Kases => Collection::Kases,
        }
    }
}

/// Which part of a generated record a stored record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// The record itself.
    Whole,
    /// The `n`th track on a parent.
    Track(u8),
    /// The `k`th task of the `n`th track on a parent.
    TrackTask(u8, u8),
}

/// How to make one stored record again: 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recipe {
    pub collection: Collection,
    pub part: Part,
    pub index: u32,
}

impl Recipe {
    pub fn whole(collection: Collection, index: u32) -> Recipe {
        Recipe { collection, part: Part::Whole, index }
    }

    /// The entity a party, opportunity or case is (what references to it copy from).
    pub fn entity(&self) -> Option<Entity> {
        match self.collection {
            Collection::Parties => Some(Entity::Parties),
            Collection::Opportunities => Some(Entity::Opportunities),
            Collection::Kases => Some(Entity::Kases),
            _ => None,
        }
    }
}

/// The seed, sizes and reference data an account's generated records are made from.
#[derive(Debug, Default)]
pub struct Blueprint {
    /// The ChaCha key every record's streams are drawn from (derived from the seed).
    key: [u8; 32],
    pub sizes: Sizes,
    pub reference: Reference,
}

impl Blueprint {
    pub(crate) fn new(seed: u64, parties: usize) -> Arc<Blueprint> {
        let key = ChaCha8Rng::seed_from_u64(seed).get_seed();
        let sizes = Sizes::of(parties);
        let mut blueprint = Blueprint { key, sizes, reference: Reference::default() };
        blueprint.reference = Reference::new(&mut blueprint.account_stream(AccountStream::Reference), parties);
        Arc::new(blueprint)
    }

    /// One of the account's own random streams.
    pub(crate) fn account_stream(&self, stream: AccountStream) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::from_seed(self.key);
        rng.set_stream(u64::MAX - stream as u64);
        rng
    }

    /// The record's position among all generated records.
    fn ordinal(&self, collection: Collection, index: u32) -> i64 {
        let before: u64 = Collection::IN_ID_ORDER
            .iter()
            .take_while(|c| **c != collection)
            .map(|c| u64::from(self.sizes.of_collection(*c)))
            .sum();
        (before + u64::from(index)) as i64
    }

    /// The first id of the record's block (its own id).
    pub(crate) fn first_id(&self, collection: Collection, index: u32) -> i64 {
        FIRST_ID + self.ordinal(collection, index) * ID_BLOCK
    }

    /// The first id above every generated record's block.
    pub fn end_of_ids(&self) -> i64 {
        let all: u64 = Collection::IN_ID_ORDER.iter().map(|c| u64::from(self.sizes.of_collection(*c))).sum();
        FIRST_ID + all as i64 * ID_BLOCK
    }

    /// One of a record's random streams.
    fn stream(&self, collection: Collection, index: u32, stream: u64) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::from_seed(self.key);
        rng.set_stream(self.ordinal(collection, index) as u64 * 2 + stream);
        rng
    }

    /// The generator a record is made with: its streams, its id block.
    pub(crate) fn gen_for(&self, collection: Collection, index: u32) -> Gen {
        let first = self.first_id(collection, index);
        Gen::for_block(
            self.stream(collection, index, BODY_STREAM),
            self.stream(collection, index, IDENTITY_STREAM),
            first..first + ID_BLOCK,
        )
    }

    /// What references to record `index` of `entity` copy, made from its identity stream.
    pub fn identity(&self, entity: Entity, index: u32) -> RefFields {
        let collection = Collection::of_entity(entity);
        let id = self.first_id(collection, index);
        let organisation = entity == Entity::Parties && is_organisation(index);
        generate::identity(entity, &mut self.stream(collection, index, IDENTITY_STREAM), id, organisation)
    }

    /// Makes a stored record again (or for the first time): the same every time.
    pub(crate) fn make(&self, recipe: Recipe) -> Fresh {
        let Recipe { collection, part, index } = recipe;
        let mut g = self.gen_for(collection, index);
        let src = Source::Base(self);
        match collection {
            Collection::Parties => generate::new_party(&mut g, src, is_organisation(index)),
            Collection::Opportunities => generate::new_opportunity(&mut g, src),
            Collection::Kases => generate::new_kase(&mut g, src),
            Collection::Tasks => generate::new_task(&mut g, src, None),
            Collection::Entries => generate::new_entry(&mut g, src),
            Collection::OpportunityTracks | Collection::KaseTracks => {
                let entity = if collection == Collection::KaseTracks { Entity::Kases } else { Entity::Opportunities };
                let mut tracks = generate::tracks_on(&mut g, self, entity, index);
                match part {
                    Part::Track(n) => tracks.swap_remove(usize::from(n)).0,
                    Part::TrackTask(n, k) => tracks.swap_remove(usize::from(n)).1.swap_remove(usize::from(k)),
                    Part::Whole => unreachable!("a parent's tracks are stored one by one"),
                }
            }
        }
    }
}

/// Which generated parties are organisations: about four in nine, spread evenly.
pub(crate) fn is_organisation(index: u32) -> bool {
    index.is_multiple_of(3) || index.is_multiple_of(7)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::super::{Account, Entity, Stored};

    fn ids_in(value: &Value, out: &mut Vec<i64>) {
        match value {
            Value::Object(map) => {
                if let Some(id) = map.get("id").and_then(Value::as_i64) {
                    out.push(id);
                }
                map.values().for_each(|v| ids_in(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| ids_in(v, out)),
            _ => {}
        }
    }

    #[test]
    fn a_generated_record_reads_the_same_every_time_and_costs_no_text() {
        let a = Account::generate(3, 400);
        let b = Account::generate(3, 400);
        let texts = |a: &Account| a.stored().map(Stored::json).collect::<Vec<_>>();
        assert_eq!(texts(&a), texts(&a), "made again, a record reads the same");
        assert_eq!(texts(&a), texts(&b), "the same seed gives the same records");
        assert_eq!(a.kept_size().1, 0, "a fresh account keeps no record as text");
        // What the account holds per record: its `updatedAt` and recipe, beside its id.
        assert!(size_of::<Stored>() <= 32, "a stored record takes {} bytes", size_of::<Stored>());
    }

    #[test]
    fn references_copy_the_record_they_point_to() {
        let a = Account::generate(5, 600);
        let reference_of = |entity: Entity, value: &Value| {
            let id = value["id"].as_i64().expect("a reference has an id");
            let target = a.entity(entity).get(&id).unwrap_or_else(|| panic!("{value} points to no {entity:?}"));
            let (fields, body) = (target.fields(), target.body());
            // What `fields` gives without making the record is what the record says.
            assert_eq!(fields.id, body["id"]);
            assert_eq!(fields.name, body.get("name").cloned().unwrap_or(Value::Null));
            assert_eq!(fields.first_name, body.get("firstName").cloned().unwrap_or(Value::Null));
            assert_eq!(fields.picture_url, body.get("pictureURL").cloned().unwrap_or(Value::Null));
            for key in ["name", "firstName", "lastName", "type", "pictureURL"] {
                if let Some(copied) = value.get(key) {
                    assert_eq!(copied, &body[key], "{key} of {value}");
                }
            }
        };
        let mut checked = 0;
        for record in a.stored() {
            let body = record.body();
            for (key, entity) in
                [("party", Entity::Parties), ("opportunity", Entity::Opportunities), ("kase", Entity::Kases)]
            {
                if body[key].is_object() {
                    reference_of(entity, &body[key]);
                    checked += 1;
                }
            }
            if body["organisation"].is_object() {
                reference_of(Entity::Parties, &body["organisation"]);
                assert_eq!(
                    a.entity(Entity::Parties)[&body["organisation"]["id"].as_i64().unwrap()].body()["type"],
                    "organisation"
                );
                checked += 1;
            }
        }
        assert!(checked > 1000, "{checked} references checked");
    }

    #[test]
    fn ids_never_collide_across_records_and_what_they_nest() {
        let a = Account::generate(9, 700);
        let mut ids = Vec::new();
        for record in a.stored() {
            let body = record.body();
            let mut own = vec![body["id"].as_i64().unwrap()];
            for key in
                ["phoneNumbers", "addresses", "emailAddresses", "websites", "fields", "participants", "attachments"]
            {
                ids_in(&body[key], &mut own);
            }
            ids.extend(own.iter().filter(|id| **id >= 100_000));
        }
        let tombstones = a.deleted.values().chain(a.restricted.values()).flatten();
        ids.extend(tombstones.map(|t| t.body["id"].as_i64().unwrap()));
        let distinct: BTreeSet<i64> = ids.iter().copied().collect();
        assert_eq!(distinct.len(), ids.len(), "an id given twice");
    }

    #[test]
    fn an_edited_record_is_kept_as_text_and_the_others_still_made() {
        let mut a = Account::generate(11, 300);
        let id = *a.entity(Entity::Parties).keys().nth(7).unwrap();
        let before = a.entity(Entity::Parties)[&id].body();
        let neighbour = *a.entity(Entity::Parties).keys().nth(8).unwrap();
        let neighbour_before = a.entity(Entity::Parties)[&neighbour].json();
        a.records.get_mut(&Entity::Parties).unwrap().get_mut(&id).unwrap().edit(|b| b["about"] = "changed".into());
        let after = &a.entity(Entity::Parties)[&id];
        assert_eq!(after.body()["about"], "changed");
        assert_eq!(after.body()["id"], before["id"]);
        assert!(after.kept_bytes().is_some_and(|b| b > 100), "the edited record is kept as text");
        assert_eq!(a.entity(Entity::Parties)[&neighbour].json(), neighbour_before);
        assert_eq!(a.kept_size().1, 1);
    }
}
