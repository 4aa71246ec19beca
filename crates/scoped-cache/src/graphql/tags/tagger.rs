//! Reading the response after it ran: the types and entities it holds, and the
//! mutations that ran.

use super::*;

/// Reads and removes what the rewrite added to a response.
pub(super) struct Tagger<'a> {
    rewrite: &'a Rewrite,
    max_tags: usize,
    types: IndexSet<String>,
    /// Listed ids per type, to list each entity once.
    ids: HashMap<String, HashSet<String>>,
    entities: Vec<(String, String)>,
    overflowed: IndexSet<String>,
}

impl<'a> Tagger<'a> {
    pub(super) fn new(rewrite: &'a Rewrite, max_tags: usize) -> Self {
        Self {
            rewrite,
            max_tags,
            types: IndexSet::new(),
            ids: HashMap::new(),
            entities: Vec::new(),
            overflowed: IndexSet::new(),
        }
    }

    /// Walks `data` depth first in document order, descending only into the values of
    /// fields that return objects.
    pub(super) fn walk(&mut self, data: &mut Value) {
        let mut stack = vec![data];
        while let Some(value) = stack.pop() {
            if let Value::Object(object) = &mut *value {
                self.take(object);
                // async-graphql answers an object whose selections all fell away (a
                // fragment on another type, `@skip`) with null, not `{}`.
                if object.is_empty() {
                    *value = Value::Null;
                    continue;
                }
            }
            match value {
                Value::Object(object) => {
                    let composite = &self.rewrite.composite_keys;
                    stack.extend(
                        object
                            .iter_mut()
                            .rev()
                            .filter(|(key, value)| is_container(value) && composite.contains(*key))
                            .map(|(_, value)| value),
                    );
                }
                Value::List(items) => {
                    stack.extend(items.iter_mut().rev().filter(|v| is_container(v)))
                }
                _ => {}
            }
        }
    }

    /// Removes the added keys from one object and records what they say.
    fn take(&mut self, object: &mut IndexMap<Name, Value>) {
        let Some(Value::String(type_name)) = object.shift_remove(TYPENAME_KEY) else {
            return;
        };
        let id = self
            .rewrite
            .id_keys
            .get(type_name.as_str())
            .and_then(|key| object.shift_remove(key));
        if object.is_empty() {
            return;
        }
        if !self.types.contains(type_name.as_str()) {
            self.types.insert(type_name.clone());
        }
        match id {
            Some(Value::String(id)) => self.entity(type_name, id),
            Some(Value::Number(id)) => self.entity(type_name, id.to_string()),
            Some(Value::Enum(id)) => self.entity(type_name, id.to_string()),
            // No id: the type has none, it was not selected here, or it is not one. The
            // object may be any entity of its type.
            _ => {
                self.overflowed.insert(type_name);
            }
        }
    }

    fn entity(&mut self, type_name: String, id: String) {
        if self.overflowed.contains(type_name.as_str()) {
            return;
        }
        if self
            .ids
            .get(type_name.as_str())
            .is_some_and(|ids| ids.contains(&id))
        {
            return;
        }
        if self.entities.len() >= self.max_tags {
            self.overflowed.insert(type_name);
            return;
        }
        self.ids
            .entry(type_name.clone())
            .or_default()
            .insert(id.clone());
        self.entities.push((type_name, id));
    }

    pub(super) fn finish(mut self) -> ExecutionReport {
        // Selected types the answer holds no object of: it depends on them all the same
        // (an empty list of posts changes when a post is created), so any of their
        // entities matches it.
        for selected in &self.rewrite.selected {
            if !selected.starts_with(RESERVED) && !self.types.contains(selected.as_str()) {
                self.types.insert(selected.clone());
                self.overflowed.insert(selected.clone());
            }
        }
        ExecutionReport {
            types: self.types.into_iter().collect(),
            entities: self.entities,
            overflowed: self.overflowed.into_iter().collect(),
            ..ExecutionReport::default()
        }
    }
}

pub(super) fn is_container(value: &Value) -> bool {
    matches!(value, Value::Object(_) | Value::List(_))
}
