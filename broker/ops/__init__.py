"""Operations: the one implementation of what reviewers and operators do, for the command
line and the console alike.

Reading what the router set aside: `reading` (the blocked stream, forwards and backwards,
and the escalation queue) and `find` (one blocked record by trace id), on top of `amqp`.
Deciding it: `rules` (pure checks), `transaction` (one transactional channel), `audit`
(the record of decisions in Redis), `blocked` (release, confirm), `escalations` (approve,
reject, expire, request evidence, re-score) and the routers' `sweeper`. `provision`
creates agents' logins and sets up a vhost.
"""
