"""Non-model steps an agent or a verifier calls: retrieval (``retrieval``, ``qa_data``) and the code sandbox
(``sandbox``)."""
