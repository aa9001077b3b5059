"""Local machine learning, the optional extra maildesk[ml] (issues 19 and 20): sentence
embeddings from a model shipped inside a package, on this host's CPU. Nothing here is
imported by a desk that does not ask for it, and nothing is fetched or sent anywhere."""
