//! The formats a SPARQL answer and a catalog export come in (docs/RDF.md), named by the media
//! types of the SPARQL 1.1 Protocol, so that the socket and the gateway offer the same ones.

use serde::{Deserialize, Serialize};

/// How the solutions of a SELECT and the answer of an ASK are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResultsFormat {
    #[default]
    Json,
    Xml,
    Csv,
    Tsv,
}

/// How the triples of a CONSTRUCT or DESCRIBE, or of an export, are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TriplesFormat {
    #[default]
    Turtle,
    NTriples,
    JsonLd,
    RdfXml,
}

impl ResultsFormat {
    pub const ALL: [Self; 4] = [Self::Json, Self::Xml, Self::Csv, Self::Tsv];

    pub fn media_type(self) -> &'static str {
        match self {
            Self::Json => "application/sparql-results+json",
            Self::Xml => "application/sparql-results+xml",
            Self::Csv => "text/csv",
            Self::Tsv => "text/tab-separated-values",
        }
    }

    /// The format of a media type (parameters such as `; charset=utf-8` left out), if it is one.
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        let bare = bare(media_type);
        Self::ALL
            .into_iter()
            .find(|f| f.media_type() == bare)
            .or(match bare.as_str() {
                "application/json" => Some(Self::Json),
                "application/xml" => Some(Self::Xml),
                _ => None,
            })
    }
}

impl TriplesFormat {
    pub const ALL: [Self; 4] = [Self::Turtle, Self::NTriples, Self::JsonLd, Self::RdfXml];

    pub fn media_type(self) -> &'static str {
        match self {
            Self::Turtle => "text/turtle",
            Self::NTriples => "application/n-triples",
            Self::JsonLd => "application/ld+json",
            Self::RdfXml => "application/rdf+xml",
        }
    }

    /// The name `agora export --format` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Turtle => "turtle",
            Self::NTriples => "ntriples",
            Self::JsonLd => "jsonld",
            Self::RdfXml => "rdfxml",
        }
    }

    pub fn from_media_type(media_type: &str) -> Option<Self> {
        let bare = bare(media_type);
        Self::ALL.into_iter().find(|f| f.media_type() == bare)
    }
}

impl std::str::FromStr for TriplesFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|f| f.name()).collect();
                format!("unknown format {s:?}; the formats are {}", names.join(", "))
            })
    }
}

/// A media type without its parameters, lowercase.
fn bare(media_type: &str) -> String {
    media_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_round_trip_and_parameters_are_left_out() {
        for f in ResultsFormat::ALL {
            assert_eq!(ResultsFormat::from_media_type(f.media_type()), Some(f));
        }
        for f in TriplesFormat::ALL {
            assert_eq!(TriplesFormat::from_media_type(f.media_type()), Some(f));
            assert_eq!(f.name().parse::<TriplesFormat>(), Ok(f));
        }
        assert_eq!(
            ResultsFormat::from_media_type("Application/SPARQL-Results+JSON; charset=utf-8"),
            Some(ResultsFormat::Json)
        );
        assert_eq!(ResultsFormat::from_media_type("text/html"), None);
        assert_eq!(
            "ttl".parse::<TriplesFormat>(),
            Err("unknown format \"ttl\"; the formats are turtle, ntriples, jsonld, rdfxml".into())
        );
    }
}
