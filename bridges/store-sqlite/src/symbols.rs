//! Interned label strings. A head holds every label name and value once,
//! reference-counted, so 100k series that share `namespace="shop"` pay for
//! "shop" once and each series holds a 4-byte symbol.

use std::collections::HashMap;
use std::sync::Arc;

/// An interned string's id. Stable while any series holds it.
pub(crate) type Sym = u32;

/// A reference-counted string table. Invariant: `map[strs[s]] == s` for
/// every live symbol `s`, and `refs[s]` counts the holders of `s`; a symbol
/// whose count drops to zero is freed and its id reused.
#[derive(Default)]
pub(crate) struct Symbols {
    map: HashMap<Arc<str>, Sym>,
    strs: Vec<Option<Arc<str>>>,
    refs: Vec<u32>,
    free: Vec<Sym>,
}

impl Symbols {
    /// Interns `s` and takes one reference to it.
    pub(crate) fn intern(&mut self, s: &str) -> Sym {
        if let Some(&sym) = self.map.get(s) {
            self.refs[sym as usize] += 1;
            return sym;
        }
        let arc: Arc<str> = Arc::from(s);
        let sym = match self.free.pop() {
            Some(sym) => {
                self.strs[sym as usize] = Some(arc.clone());
                self.refs[sym as usize] = 1;
                sym
            }
            None => {
                let sym = self.strs.len() as Sym;
                self.strs.push(Some(arc.clone()));
                self.refs.push(1);
                sym
            }
        };
        self.map.insert(arc, sym);
        sym
    }

    /// Drops one reference; frees the symbol when none is left.
    pub(crate) fn release(&mut self, sym: Sym) {
        let Some(r) = self.refs.get_mut(sym as usize) else {
            return;
        };
        if *r == 0 {
            return;
        }
        *r -= 1;
        if *r == 0 {
            if let Some(s) = self.strs[sym as usize].take() {
                self.map.remove(&*s);
            }
            self.free.push(sym);
        }
    }

    /// The symbol of `s`, if interned (takes no reference).
    pub(crate) fn get(&self, s: &str) -> Option<Sym> {
        self.map.get(s).copied()
    }

    /// The string of a live symbol ("" for a freed one, which no series holds).
    pub(crate) fn resolve(&self, sym: Sym) -> &str {
        self.strs
            .get(sym as usize)
            .and_then(|s| s.as_deref())
            .unwrap_or("")
    }

    /// Approximate heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.map.capacity() * (16 + 4 + 1)
            + self.strs.capacity() * 16
            + self.refs.capacity() * 4
            + self.free.capacity() * 4
            + self
                .strs
                .iter()
                .flatten()
                .map(|s| 16 + s.len().next_multiple_of(8))
                .sum::<usize>()
    }

    /// Live symbols.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_counts_references_and_reuses_ids() {
        let mut s = Symbols::default();
        let a = s.intern("shop");
        let b = s.intern("shop");
        assert_eq!(a, b);
        let c = s.intern("api");
        assert_ne!(a, c);
        assert_eq!(s.resolve(a), "shop");
        s.release(a);
        assert_eq!(s.get("shop"), Some(a));
        s.release(a);
        assert_eq!(s.get("shop"), None);
        assert_eq!(s.len(), 1);
        let d = s.intern("web");
        assert_eq!(d, a, "freed id is reused");
        assert_eq!(s.resolve(d), "web");
        assert_eq!(s.resolve(c), "api");
    }
}
