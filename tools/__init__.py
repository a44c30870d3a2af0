"""Non-model steps an agent or a verifier calls: retrieval (``retrieval``, ``qa_data``), the code sandbox
(``sandbox``) and model-written programs in it with their call channel (``program_sandbox``), SQL execution
(``sql``, ``spider``), and the recorded and public data sets workflows are scored on (``reflection_data``,
``exams``, ``workflowgen``)."""
