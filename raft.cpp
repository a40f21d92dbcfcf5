// raft.cpp: the Replica in the order of the Raft paper: construction and the log, role changes
// (§5.1), election (§5.2), replication and commitment (§5.3, §5.4), transitions in and out, then
// the dissertation's membership changes (chapter 4), check-quorum, reads and leader transfer
// (§6.2, §6.4, §3.10), log compaction (§7) and the poll loop. Everything about bytes comes last,
// past the banners: the wire format and FileStorage. Section numbers (§5.2) and figures refer to
// "In Search of an Understandable Consensus Algorithm" (extended version); "the dissertation's
// §4.2.3" to Ongaro's Raft thesis, "Consensus: Bridging Theory and Practice".
#include "raft.hpp"

#include <algorithm>
#include <array>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <sys/stat.h>
#include <thread>
#include <type_traits>
#include <unistd.h>

namespace raft {

constexpr Term kMaxTerm = UINT64_MAX - 1; // a message of a later term is bad input, ignored

static bool has(const std::vector<ReplicaID>& ids, ReplicaID id) { // ids sorted
  return std::binary_search(ids.begin(), ids.end(), id);
}

// What a correct leader sends: some voters, each list in ascending order, no id twice or in both.
static bool well_formed(const Configuration& c) {
  for (const std::vector<ReplicaID>* ids : {&c.voters, &c.learners})
    if (std::adjacent_find(ids->begin(), ids->end(), std::greater_equal<>()) != ids->end())
      return false;
  auto in_both = [&c](ReplicaID id) { return has(c.voters, id); };
  return !c.voters.empty() && std::none_of(c.learners.begin(), c.learners.end(), in_both);
}

// ---- Defaults of the user's interfaces ----

std::optional<Snapshot> StateMachine::get_snapshot() { return std::nullopt; }
Snapshot StateMachine::create_snapshot(Index, Term) {
  throw std::logic_error("snapshot_delta is set but the state machine has no create_snapshot");
}
void StateMachine::set_snapshot(const Snapshot&) {
  throw std::logic_error("a snapshot arrived but the state machine has no set_snapshot");
}

void Cluster::wait_until(Clock::time_point deadline) {
  std::this_thread::sleep_until(std::min(deadline, Clock::now() + std::chrono::milliseconds(1)));
}

// ---- Storage ----

Storage::State MemoryStorage::load() { return state_; }

void MemoryStorage::save_term_and_vote(Term current_term, std::optional<ReplicaID> voted_for) {
  state_.current_term = current_term;
  state_.voted_for = voted_for;
}

void MemoryStorage::save_entries(Index first, const Entry* begin, const Entry* end) {
  Index start = state_.snapshot ? state_.snapshot->last_included_index : 0;
  if (first <= start) throw std::logic_error("MemoryStorage: entries would overwrite the snapshot");
  state_.entries.resize(std::min<Index>(state_.entries.size(), first - start - 1));
  state_.entries.insert(state_.entries.end(), begin, end);
}

void MemoryStorage::save_snapshot(const Snapshot& snapshot, const Entry* begin, const Entry* end) {
  state_.snapshot = snapshot;
  state_.entries.assign(begin, end);
}

namespace {
// What a replica without options.storage writes to: nobody could ever read it back, so an
// in-memory copy would only cost memory and time.
class VolatileStorage : public Storage {
public:
  State load() override { return {}; }
  void save_term_and_vote(Term, std::optional<ReplicaID>) override {}
  void save_entries(Index, const Entry*, const Entry*) override {}
  void save_snapshot(const Snapshot&, const Entry*, const Entry*) override {}
  void sync() override {}
};
} // namespace

// ---- Construction and recovery ----

Replica::Replica(ReplicaID id, std::vector<ReplicaID> peer_ids, Cluster& cluster,
                 StateMachine& state_machine, Transition noop_transition,
                 Duration heartbeat_timeout, std::pair<Duration, Duration> election_timeout_range,
                 Options options)
    : id_(id), cluster_(cluster), state_machine_(state_machine), noop_(std::move(noop_transition)),
      heartbeat_timeout_(heartbeat_timeout), election_timeout_range_(election_timeout_range),
      options_(options), random_(options.seed ? options.seed : std::random_device{}()) {
  std::sort(peer_ids.begin(), peer_ids.end());
  if (has(peer_ids, id)) throw std::invalid_argument("peer_ids contains the replica's own id");
  if (std::adjacent_find(peer_ids.begin(), peer_ids.end()) != peer_ids.end())
    throw std::invalid_argument("peer_ids contains a duplicate id");
  if (election_timeout_range.first >= election_timeout_range.second)
    throw std::invalid_argument("election_timeout_range needs its minimum below its maximum");
  if (heartbeat_timeout <= Duration::zero() || heartbeat_timeout >= election_timeout_range.first)
    throw std::invalid_argument(
        "heartbeat_timeout must be positive and below the election timeout");
  if (options.max_entries_per_message == 0 || options.max_messages_in_flight == 0)
    throw std::invalid_argument("options: message and flight limits must be positive");
  if (options.joining && !peer_ids.empty())
    throw std::invalid_argument("a joining replica has no peer_ids: a leader adds it");
  // The depth of a follower's pipeline in entries (a batch more may be in flight) and the most a
  // leader appends per poll; it saturates rather than overflow.
  std::size_t batch = options.max_entries_per_message, in_flight = options.max_messages_in_flight;
  window_ = in_flight > UINT64_MAX / batch ? UINT64_MAX : batch * in_flight;
  if (!options.storage) owned_storage_ = std::make_unique<VolatileStorage>();
  storage_ = options.storage ? options.storage : owned_storage_.get();

  // The constructor's configuration, unless the storage holds one (§4.1).
  if (!options.joining) peer_ids.insert(std::upper_bound(peer_ids.begin(), peer_ids.end(), id), id);
  Storage::State state = storage_->load();
  storage_->sync(); // what was loaded may never have been synced: nothing may depend on it before
  current_term_ = state.current_term, voted_for_ = state.voted_for;
  log_ = std::move(state.entries);
  if (state.snapshot) {
    snapshot_ = std::make_shared<const Snapshot>(std::move(*state.snapshot));
    state_machine_.set_snapshot(*snapshot_);
  } else if (std::optional<Snapshot> snapshot = state_machine_.get_snapshot()) {
    // A state the machine is already in: keep it and drop the log it covers.
    if (snapshot->configuration.voters.empty()) snapshot->configuration.voters = peer_ids;
    log_.erase(log_.begin(),
               log_.begin() + std::min<Index>(log_.size(), snapshot->last_included_index));
    storage_->save_snapshot(*snapshot, log_.data(), log_.data() + log_.size());
    storage_->sync();
    snapshot_ = std::make_shared<const Snapshot>(std::move(*snapshot));
  } else {
    snapshot_ = std::make_shared<const Snapshot>();
  }
  log_start_ = snapshot_->last_included_index, log_start_term_ = snapshot_->last_included_term;
  const Configuration& stored = snapshot_->configuration;
  configs_.assign(1, {log_start(), stored.voters.empty() ? Configuration{peer_ids, {}} : stored});
  track_configurations(log_start() + 1);
  commit_index_ = last_applied_ = log_start();
  durable_index_ = last_log_index();
}

// ---- The log, read through bounds-checked helpers aware of the snapshot offset ----

// The term of the entry at `index`; 0 for index 0 and for positions outside the log.
Term Replica::term_at(Index index) const {
  if (index == log_start()) return log_start_term_;
  if (index < log_start() || index > last_log_index()) return 0;
  return log_[index - log_start() - 1].term;
}

// Writes the log from `first` on, after entries were appended in memory; this also drops from
// storage any suffix that truncate_from removed.
void Replica::save_from(Index first) {
  storage_->save_entries(first, log_.data() + (first - log_start() - 1), log_.data() + log_.size());
}

// Drops entries >= index; the caller appends the leader's entries from index right after.
void Replica::truncate_from(Index index) {
  assert(index > commit_index_ && index > log_start()); // committed entries are never removed
  log_.resize(index - log_start() - 1);
  durable_index_ = std::min(durable_index_, index - 1);
  while (configs_.back().first >= index) configs_.pop_back(); // §4.1: the previous one again
}

// Figure 2: currentTerm and votedFor change together, in one write to storage.
void Replica::set_term_and_vote(Term term, std::optional<ReplicaID> voted_for) {
  current_term_ = term, voted_for_ = voted_for;
  storage_->save_term_and_vote(term, voted_for);
}

// ---- Role changes: the only code that changes the role or reports the leader ----

void Replica::become_follower(Term term, std::optional<ReplicaID> leader) {
  assert(term >= current_term_);
  if (term > current_term_) set_term_and_vote(term, std::nullopt);
  if (role_ != Role::Follower || leader) reset_election_timer(); // word from a leader (§5.2)
  if (leader) leader_contact_ = now_;
  role_ = Role::Follower;
  set_leader(leader);
  for (Peer& peer : peers_) peer = Peer{peer.id, peer.voter}; // leader state ends, and transfers
  transfer_to_.reset();
  for (const Read& read : std::exchange(reads_, {})) abandon(read.id, AbandonReason::NotLeader);
  if (change_) abandon(std::exchange(change_, std::nullopt)->id, AbandonReason::NotLeader);
  for (; !accepted_.empty(); accepted_.pop_front()) // never in our log
    abandon(accepted_.front().id, AbandonReason::NotLeader);
}

// §5.2: a candidate votes for itself in a new term. With Pre-Vote (the dissertation's §9.6), a
// pre-candidate changes nothing durable: it only asks whether it could win.
void Replica::become_candidate(bool pre_vote) {
  role_ = pre_vote ? Role::PreCandidate : Role::Candidate;
  set_leader(std::nullopt); // it no longer hears one
  if (!pre_vote) set_term_and_vote(current_term_ + 1, id_);
  reset_election_timer();
  for (Peer& peer : peers_) peer.vote_granted = false;
}

// §5.3, §8: a new leader assumes nothing of its followers, probes each from its own last index
// and appends a no-op so that entries of earlier terms commit through it (Figure 8).
void Replica::become_leader() {
  role_ = Role::Leader;
  set_leader(id_);
  for (Peer& peer : peers_) peer = Peer{peer.id, peer.voter, last_log_index() + 1};
  quorum_deadline_ = now_ + election_timeout_range_.second, lease_round_ = round_ + 1;
  log_.push_back(Entry{current_term_, noop_});
  save_from(last_log_index());
}

// ---- §5.2 Leader election ----

// A candidate asks every voter for its vote; a pre-candidate that could win campaigns for real.
// Pre-Vote means a replica cut off from a leader that others still hear cannot depose it.
void Replica::campaign(bool pre_vote, bool transfer) {
  if (current_term_ >= kMaxTerm) return reset_election_timer(); // no term is left to run in
  become_candidate(pre_vote);
  if (agreed(granted, 1)) return pre_vote ? campaign(false) : become_leader();
  for (Peer& peer : peers_) {
    if (!peer.voter) continue;
    Message request = make_message(MessageType::RequestVote, peer.id);
    request.term += pre_vote; // the term it would campaign for
    request.pre_vote = pre_vote, request.transfer = transfer;
    request.last_log_index = last_log_index(), request.last_log_term = term_at(last_log_index());
    send(std::move(request));
  }
}

// §5.2: a fresh random timeout at every reset keeps split votes rare.
void Replica::reset_election_timer() {
  auto [minimum, maximum] = election_timeout_range_;
  auto span = static_cast<std::uint64_t>((maximum - minimum).count());
  election_deadline_ =
      now_ + minimum + Duration(static_cast<Duration::rep>(random_() % (span + 1)));
}

// The highest value that a majority of the voters hold, this replica's own counting if it votes:
// a commit (§5.3), an election (§5.2), check-quorum and read rounds are all this count.
template <class Value> Index Replica::agreed(Value value, Index own) {
  matched_.clear();
  if (voter_) matched_.push_back(own);
  for (const Peer& peer : peers_)
    if (peer.voter) matched_.push_back(value(peer));
  if (matched_.empty()) return 0;
  auto majority = matched_.begin() + matched_.size() / 2;
  std::nth_element(matched_.begin(), majority, matched_.end(), std::greater<Index>());
  return *majority;
}

void Replica::handle_request_vote(const Message& request, bool heard) {
  // Figure 2: grant if the term is current, no other vote was cast in it, and the candidate's
  // log is at least as up to date as ours (§5.4.1). A pre-vote for a later term (the
  // dissertation's §9.6) needs such a log too, and that we heard from no leader for the minimum
  // election timeout (its §4.2.3).
  // §5.4.1: a later last term wins; with equal last terms, the longer log wins.
  Term last_term = term_at(last_log_index());
  bool up_to_date =
      request.last_log_term > last_term ||
      (request.last_log_term == last_term && request.last_log_index >= last_log_index());
  // Two pre-candidates would split the vote that follows: of two equal logs, the lower id goes
  // ahead, and a pre-candidate that grants a pre-vote stands back as a follower.
  bool rival = request.pre_vote && role_ == Role::PreCandidate;
  bool ahead = request.last_log_index != last_log_index() || request.last_log_term != last_term ||
               request.from < id_;
  bool vote_granted =
      request.pre_vote ? request.term > current_term_ && up_to_date && !heard && (!rival || ahead)
                       : request.term == current_term_ && up_to_date &&
                             (!voted_for_ || *voted_for_ == request.from);
  if (vote_granted && rival) become_follower(current_term_, std::nullopt); // it stands back
  if (vote_granted && !request.pre_vote) { // saved again, if a repeated grant
    set_term_and_vote(current_term_, request.from);
    reset_election_timer();
  }
  Message response = make_message(MessageType::RequestVoteResponse, request.from);
  response.pre_vote = request.pre_vote, response.vote_granted = vote_granted;
  send(std::move(response));
}

// A pre-vote is answered in the voter's term. A higher one made us a follower already; a grant
// in a lower one may answer a round of an earlier term, so only one in our term counts.
void Replica::handle_request_vote_response(const Message& response, Peer& peer) {
  bool ours = response.term == current_term_ &&
              role_ == (response.pre_vote ? Role::PreCandidate : Role::Candidate);
  if (!ours || !response.vote_granted) return;
  peer.vote_granted = true;
  if (agreed(granted, 1)) role_ == Role::PreCandidate ? campaign(false) : become_leader();
}

// ---- §5.3 Log replication ----

// Sends up to `limit` entries from the peer's nextIndex. A peer in Probe gets one request at a
// time; a peer known to match gets a pipeline: nextIndex moves on as soon as entries are sent.
void Replica::send_append_entries(Peer& peer, std::size_t limit) {
  if (peer.progress == Progress::Snapshot || peer.next_index <= log_start())
    return send_snapshot_chunk(peer); // it needs what was compacted (§7)
  Message request = make_message(MessageType::AppendEntries, peer.id);
  request.prev_log_index = peer.next_index - 1;
  request.prev_log_term = term_at(request.prev_log_index);
  Index last =
      request.prev_log_index + std::min<Index>(limit, last_log_index() - request.prev_log_index);
  request.entries.assign(log_.begin() + (request.prev_log_index - log_start()),
                         log_.begin() + (last - log_start()));
  request.leader_commit = commit_index_, request.round = round_;
  peer.commit_sent = commit_index_, peer.heartbeat_due = now_ + heartbeat_timeout_;
  peer.in_flight = peer.progress == Progress::Probe; // a probe waits for its answer
  if (peer.progress == Progress::Pipeline) peer.next_index = last + 1;
  send(std::move(request));
}

// Called once at the end of a leader's poll: everything accepted or learned in the poll goes out
// together, at most a window of unacknowledged entries per peer, and a heartbeat when idle.
void Replica::replicate() {
  std::size_t batch = options_.max_entries_per_message;
  // A heartbeat round goes to every peer at once: when one is due, or when reads wait for one.
  bool due = std::any_of(peers_.begin(), peers_.end(),
                         [this](const Peer& peer) { return now_ >= peer.heartbeat_due; });
  if (std::exchange(start_round_, false) || due) {
    round_starts_.push_back(now_), ++round_;
    while (now_ - round_starts_.front() > election_timeout_range_.first) round_starts_.pop_front();
    for (Peer& peer : peers_) peer.heartbeat_due = now_;
  }
  for (Peer& peer : peers_) {
    bool heartbeat_due = now_ >= peer.heartbeat_due;
    if (peer.progress != Progress::Pipeline) {
      if (!peer.in_flight || heartbeat_due) send_append_entries(peer, batch);
      continue;
    }
    bool sent = false;
    for (; peer.progress == Progress::Pipeline && peer.next_index <= last_log_index() &&
           peer.next_index - peer.match_index <= window_;
         sent = true)
      send_append_entries(peer, batch);
    if (!sent && (heartbeat_due || peer.commit_sent < commit_index_)) send_append_entries(peer, 0);
    if (heartbeat_due) send_timeout_now(peer);
  }
}

void Replica::handle_append_entries(Message& request) {
  if (request.term >= current_term_) become_follower(request.term, request.from); // §5.1, §5.2
  Message response = make_message(MessageType::AppendEntriesResponse, request.from);
  response.prev_log_index = request.prev_log_index, response.round = request.round;
  if (request.term < current_term_) return send(std::move(response)); // a stale leader learns

  Index prev = request.prev_log_index;
  if (prev > last_log_index()) { // our log is too short: tell the leader where it ends
    response.conflict_index = last_log_index() + 1;
    return send(std::move(response));
  }
  if (prev > log_start() && term_at(prev) != request.prev_log_term) {
    // §5.3 optimization: name the conflicting term and the first index we hold for it, so the
    // leader skips the whole term in one round trip.
    response.conflict_term = term_at(prev);
    for (response.conflict_index = prev;
         response.conflict_index - 1 > log_start() &&
         term_at(response.conflict_index - 1) == response.conflict_term;)
      --response.conflict_index;
    return send(std::move(response));
  }
  // Skip what we already hold (entries the snapshot covers are committed, hence equal); a stale
  // or duplicated request never truncates. Truncate at the first conflict, then append.
  // Committed entries are never replaced: a request that disagrees with them, or that carries an
  // entry of a term above its own, comes from no correct leader and is ignored.
  for (const Entry& e : request.entries)
    if (e.term > request.term || e.term == 0 || (e.configuration && !well_formed(*e.configuration)))
      return;
  Index match = prev + request.entries.size(), index = prev + 1;
  auto entry = request.entries.begin();
  for (; entry != request.entries.end() &&
         (index <= log_start() || (index <= last_log_index() && term_at(index) == entry->term));
       ++entry, ++index) {}
  if (entry != request.entries.end() && index <= commit_index_) return;
  if (entry != request.entries.end()) {
    if (index <= last_log_index()) truncate_from(index);
    log_.insert(log_.end(), std::make_move_iterator(entry),
                std::make_move_iterator(request.entries.end()));
    save_from(index);
    track_configurations(index);
  }
  // Figure 2: commitIndex = min(leaderCommit, index of last new entry), never backwards.
  commit_index_ = std::max(commit_index_, std::min(request.leader_commit, match));
  response.success = true, response.match_index = match;
  send(std::move(response));
}

void Replica::handle_append_entries_response(const Message& response, Peer& peer) {
  if (role_ != Role::Leader || response.term != current_term_) return;
  peer.recent_active = true, peer.acked_round = std::max(peer.acked_round, response.round);
  if (peer.progress == Progress::Snapshot) return; // a late answer: the transfer runs to its end
  if (response.success) {                          // no follower holds more than we sent
    if (response.match_index <= last_log_index()) record_match(peer, response.match_index);
    return send_timeout_now(peer);
  }
  // A rejection of an index the peer has since matched, or of a probe other than the one in
  // flight, is stale: an answer to an earlier request that arrived late.
  Index rejected = response.prev_log_index;
  if (rejected <= peer.match_index || rejected > last_log_index() ||
      (peer.progress == Progress::Probe && rejected + 1 != peer.next_index))
    return;
  Index next = response.conflict_index;
  if (response.conflict_term != 0) { // skip to our last entry of the follower's term, if any
    Index i = std::min(rejected, last_log_index());
    for (; i > log_start() && term_at(i) > response.conflict_term; --i) {}
    if (i > log_start() && term_at(i) == response.conflict_term) next = i + 1;
  }
  peer.next_index =
      std::clamp(next, peer.match_index + 1, std::min(rejected, last_log_index() + 1));
  peer.progress = Progress::Probe, peer.in_flight = false;
}

// The peer's log matches ours through `match`: the pipeline may run and the commit may advance.
void Replica::record_match(Peer& peer, Index match) {
  peer.match_index = std::max(peer.match_index, match);
  peer.next_index = std::max(peer.next_index, peer.match_index + 1);
  peer.progress = Progress::Pipeline, peer.in_flight = false, peer.snapshot = nullptr;
  advance_commit_index();
}

// §5.3, §5.4.2: the highest index stored on a majority (this replica counts once its copy is
// durable) is committed, but only an entry of the current term commits by counting (Figure 8).
void Replica::advance_commit_index() {
  Index majority = agreed([](const Peer& peer) { return peer.match_index; }, durable_index_);
  if (majority > commit_index_ && term_at(majority) == current_term_) commit_index_ = majority;
}

// ---- Transitions in, committed transitions out ----

// A leader reports what it accepts Queued at once, but appends at most a window of it to its log
// per poll, so that a burst of any size never keeps a poll from its messages for long.
void Replica::take_pending_transitions() {
  std::vector<Transition> pending = state_machine_.get_pending_transitions();
  bool leader = role_ == Role::Leader && !transfer_to_; // §3.10: the target's log must stay current
  for (const Transition& transition : pending)
    leader ? report(transition.id, TransitionState::Queued)
           : abandon(transition.id, AbandonReason::NotLeader);
  if (leader) std::move(pending.begin(), pending.end(), std::back_inserter(accepted_));
  Index first = last_log_index() + 1;
  while (!transfer_to_ && !accepted_.empty() && last_log_index() + 1 - first < window_) {
    appended_.push_back(Appended{last_log_index() + 1, current_term_, accepted_.front().id});
    log_.push_back(Entry{current_term_, std::move(accepted_.front())});
    accepted_.pop_front();
  }
  if (last_log_index() >= first) save_from(first);
}

// Every replica applies committed entries in log order, each once per state machine lifetime.
void Replica::apply_committed() {
  for (; last_applied_ < commit_index_;) {
    const Entry& entry = log_[last_applied_ - log_start()];
    const Transition& transition = entry.transition;
    bool reported = !(transition == noop_); // AddVoter's first step is a no-op too
    if (reported) report(transition.id, TransitionState::Committed);
    if (!entry.configuration) state_machine_.apply_transition(transition);
    ++last_applied_;
    if (reported) report(transition.id, TransitionState::Applied);
  }
  // A transition queued here, even if a new leader overwrote it in our log, may still commit
  // from another replica's log. Its fate is known once its index is applied (Log Matching), or an
  // entry of a later term is (terms never decrease along a log): then, if the entry at its index
  // is not its own, it is reported ConflictWithLeader, so a committed transition never is. The
  // queue is in order of term, then index: its front is settled first.
  for (Term applied = term_at(last_applied_); !appended_.empty(); appended_.pop_front()) {
    const Appended& queued = appended_.front();
    if (queued.index > last_applied_ && queued.term >= applied) break;
    if (queued.index > last_applied_ || term_at(queued.index) != queued.term) abandon(queued.id);
  }
  if (options_.snapshot_delta &&
      last_applied_ - snapshot_->last_included_index >= options_.snapshot_delta)
    take_snapshot();
}

// ---- §4 Membership changes, one replica at a time ----

// A configuration takes effect as soon as its entry is in the log (§4.1). The peers are its
// members; those that stay keep their leader state.
void Replica::track_configurations(Index from) {
  for (Index index = from; index <= last_log_index(); ++index)
    if (const auto& config = log_[index - log_start() - 1].configuration)
      configs_.emplace_back(index, *config);
  const auto& [voters, learners] = configs_.back().second;
  std::vector<Peer> peers;
  for (const std::vector<ReplicaID>* ids : {&voters, &learners})
    for (ReplicaID id : *ids) {
      Peer* known = find_peer(id);
      if (id != id_) peers.push_back(known ? *known : Peer{id, true, last_log_index() + 1});
      if (id != id_) peers.back().voter = ids == &voters;
    }
  peers_ = std::move(peers);
  voter_ = has(voters, id_);
}

// A leader takes one change at a time, and none while the latest configuration is uncommitted.
void Replica::take_changes() {
  const auto& [voters, learners] = configs_.back().second;
  for (Change& asked : std::exchange(changes_asked_, {})) {
    bool voter = has(voters, asked.replica), member = voter || has(learners, asked.replica);
    bool pointless = asked.change == MembershipChange::Remove
                         ? !member || (voter && voters.size() == 1) // no voter would be left
                     : asked.change == MembershipChange::AddVoter ? voter
                                                                  : member;
    if (role_ != Role::Leader || transfer_to_) {
      abandon(asked.id, AbandonReason::NotLeader);
    } else if (change_ || configs_.back().first > commit_index_ || pointless) {
      abandon(asked.id, AbandonReason::Refused);
    } else {
      report(asked.id, TransitionState::Queued);
      change_ = asked;
    }
  }
}

// A change is appended once an entry of this leader's term has committed (the known fix to
// single-server changes) and the configuration before it has. AddVoter of a replica that is not
// a learner makes it one first, then promotes it after a catch-up round (reaching our last index
// as of the round's start) took less than an election timeout (§4.2.1).
void Replica::advance_change() {
  if (!change_ || transfer_to_ || term_at(commit_index_) != current_term_ ||
      configs_.back().first > commit_index_)
    return; // §3.10: during a transfer the target's log must stay current
  Change& change = *change_;
  Configuration next = configs_.back().second;
  auto& [voters, learners] = next;
  bool promote = change.change == MembershipChange::AddVoter && has(learners, change.replica);
  if (promote) {
    const Peer& learner = *find_peer(change.replica); // it matches, and answered in the round
    bool reached = learner.match_index >= change.round_end && learner.acked_round >= change.heard;
    Duration round = now_ - change.round_start, timeout = election_timeout_range_.second;
    if (change.heard && !reached && round < 10 * timeout) return; // the round goes on
    if (change.heard && (!reached || (round >= timeout && ++change.rounds == 10))) { // given up
      abandon(change.id, AbandonReason::Refused);
      return change_.reset();
    }
    if (!change.heard || round >= timeout) { // the first round, or another after a slow one
      change.round_start = now_, change.round_end = last_log_index(), change.heard = round_ + 1;
      start_round_ = true; // under load, heartbeats alone start no rounds
      return;
    }
  }
  for (auto* ids : {&voters, &learners})
    ids->erase(std::remove(ids->begin(), ids->end(), change.replica), ids->end());
  std::vector<ReplicaID>& ids = promote ? voters : learners;
  if (change.change != MembershipChange::Remove)
    ids.insert(std::upper_bound(ids.begin(), ids.end(), change.replica), change.replica);
  bool completes = promote || change.change != MembershipChange::AddVoter;
  log_.push_back(Entry{current_term_, completes ? Transition{change.id, "completes"} : noop_,
                       std::make_shared<Configuration>(std::move(next))});
  if (completes) appended_.push_back(Appended{last_log_index(), current_term_, change.id});
  if (completes) change_.reset();
  save_from(last_log_index());
  track_configurations(last_log_index());
}

// ---- Leadership: check-quorum (§6.2), transfer (§3.10), reads (§6.4) ----

// Once per maximum election timeout, a leader that has not heard from a majority steps down, so
// that a leader cut off in a minority stops acting as one within two such timeouts.
void Replica::check_quorum() {
  if (now_ < quorum_deadline_) return;
  bool active = agreed([](const Peer& peer) { return Index(peer.recent_active); }, 1);
  for (Peer& peer : peers_) peer.recent_active = false;
  quorum_deadline_ = now_ + election_timeout_range_.second;
  if (options_.check_quorum && !active) become_follower(current_term_, std::nullopt);
}

void Replica::transfer_leadership(ReplicaID to) {
  Peer* peer = find_peer(to);
  if (role_ != Role::Leader || !peer || !peer->voter) return;
  transfer_to_ = to, transfer_deadline_ = now_ + election_timeout_range_.second;
  // The lease is given up for the rest of this term: a TimeoutNow still on its way after the
  // transfer is given up could yet elect the target with votes that do not wait for the lease.
  lease_round_ = UINT64_MAX;
  send_timeout_now(*peer);
}

// The target of a transfer, once its log matches ours, is told to campaign; again with each
// heartbeat while the transfer lasts, in case the message was lost.
void Replica::send_timeout_now(Peer& peer) {
  if (transfer_to_ == peer.id && peer.match_index == last_log_index())
    send(make_message(MessageType::TimeoutNow, peer.id));
}

// A read waits for a heartbeat round that starts after it (or is served by the lease), and for
// the read index: the commit index once an entry of this leader's term has committed (§6.4).
void Replica::take_reads() {
  bool lease = !reads_asked_.empty() && role_ == Role::Leader && has_lease();
  Index index = term_at(commit_index_) == current_term_ ? commit_index_ : 0;
  for (std::uint64_t id : std::exchange(reads_asked_, {})) {
    if (role_ != Role::Leader) {
      abandon(id, AbandonReason::NotLeader);
      continue;
    }
    report(id, TransitionState::Queued);
    lease = lease && !transfer_to_; // a callback may have started a transfer
    reads_.push_back(Read{id, lease ? 0 : round_ + 1, index});
    start_round_ |= !lease;
  }
}

// The latest heartbeat round that a majority of voters (this leader among them) answered.
std::uint64_t Replica::quorum_round() {
  return agreed([](const Peer& peer) { return peer.acked_round; }, round_);
}

// A majority answered a round started less than 90% of the minimum election timeout ago: none
// of them grants a vote before that timeout (§4.2.3), even if its clock runs 10% fast.
bool Replica::has_lease() {
  if (!options_.lease_reads || !options_.check_quorum || transfer_to_) return false;
  std::uint64_t round = quorum_round(), oldest = round_ + 1 - round_starts_.size();
  return round >= std::max(lease_round_, oldest) && round <= round_ &&
         now_ < round_starts_[round - oldest] + election_timeout_range_.first * 9 / 10;
}

void Replica::serve_reads() {
  if (reads_.empty()) return;
  std::uint64_t confirmed = quorum_round();
  bool own_term = term_at(commit_index_) == current_term_;
  auto served = [&](Read& read) {
    if (read.index == 0 && own_term) read.index = commit_index_;
    if (read.round > confirmed || read.index == 0 || last_applied_ < read.index) return false;
    report(read.id, TransitionState::Applied);
    return true;
  };
  reads_.erase(std::remove_if(reads_.begin(), reads_.end(), served), reads_.end());
}

// ---- §7 Log compaction ----

// The state machine's state through lastApplied replaces the log up to there; only up to the
// oldest snapshot still in flight, so that its follower goes on from there by AppendEntries.
void Replica::take_snapshot() {
  Snapshot snapshot = state_machine_.create_snapshot(last_applied_, term_at(last_applied_));
  snapshot.last_included_index = last_applied_,
  snapshot.last_included_term = term_at(last_applied_);
  snapshot.configuration = configuration_at(last_applied_);
  snapshot.term_starts = snapshot_->term_starts;
  for (Index i = snapshot_->last_included_index + 1; i <= last_applied_; ++i)
    if (snapshot.term_starts.empty() || snapshot.term_starts.back().second != term_at(i))
      snapshot.term_starts.emplace_back(i, term_at(i));
  Index keep = last_applied_; // not for a peer silent for an election timeout: it may be down
  for (const Peer& peer : peers_)
    if (peer.progress == Progress::Snapshot &&
        now_ < peer.snapshot_progress + election_timeout_range_.second)
      keep = std::min(keep, std::max(log_start(), peer.snapshot->last_included_index));
  log_start_term_ = term_at(keep);
  log_.erase(log_.begin(), log_.begin() + (keep - log_start()));
  log_start_ = keep;
  while (configs_.size() > 1 && configs_[1].first <= keep) configs_.erase(configs_.begin());
  const Entry* after = log_.data() + (last_applied_ - keep);
  storage_->save_snapshot(snapshot, after, log_.data() + log_.size());
  snapshot_ = std::make_shared<const Snapshot>(std::move(snapshot));
}

// One chunk at a time, from the first byte the peer lacks. A transfer sends one snapshot to its
// end, however many the leader takes meanwhile, unless it made no progress for an election
// timeout: the log after its snapshot was not kept then (take_snapshot), so it starts over from
// the latest. A heartbeat while a chunk is in flight carries no bytes: its answer shows whether
// the chunk arrived. A chunk is sent again only when no progress was seen for a minimum election
// timeout.
void Replica::send_snapshot_chunk(Peer& peer) {
  bool stale = now_ >= peer.snapshot_progress + election_timeout_range_.second;
  if (peer.progress != Progress::Snapshot || (stale && peer.snapshot != snapshot_)) {
    peer.progress = Progress::Snapshot, peer.snapshot = snapshot_, peer.snapshot_offset = 0;
    peer.snapshot_progress = now_, peer.in_flight = false;
  }
  bool resend = !peer.in_flight || now_ >= peer.chunk_sent + election_timeout_range_.first;
  const Snapshot& snapshot = *peer.snapshot;
  Message request = make_message(MessageType::InstallSnapshot, peer.id);
  request.last_included_index = snapshot.last_included_index;
  request.last_included_term = snapshot.last_included_term;
  request.configuration = snapshot.configuration, request.term_starts = snapshot.term_starts;
  request.offset = peer.snapshot_offset, request.round = round_;
  request.data = snapshot.data.substr(request.offset, resend ? options_.snapshot_chunk_bytes : 0);
  request.done = request.offset + request.data.size() == snapshot.data.size();
  if (resend) peer.chunk_sent = now_;
  peer.in_flight = true, peer.heartbeat_due = now_ + heartbeat_timeout_;
  send(std::move(request));
}

// Chunks are taken in order only, each from the leader that began the transfer; a chunk at 0
// with bytes starts it again. The answer says how many bytes we hold.
void Replica::handle_install_snapshot(const Message& request) {
  // A snapshot of a term above the request's, or a configuration no leader writes: bad input.
  if (request.last_included_term > request.term || !well_formed(request.configuration)) return;
  if (request.term >= current_term_) become_follower(request.term, request.from);
  Message response = make_message(MessageType::InstallSnapshotResponse, request.from);
  response.last_included_index = request.last_included_index, response.offset = request.offset;
  response.round = request.round;
  if (request.term < current_term_) return send(std::move(response));
  response.done = request.last_included_index <= commit_index_; // we hold that state already
  if (response.done) return send(std::move(response));
  bool same = incoming_term_ == request.term &&
              incoming_.last_included_index == request.last_included_index &&
              incoming_.last_included_term == request.last_included_term;
  bool heartbeat = request.data.empty() && !request.done;
  if (request.offset == 0 && (!same || !heartbeat)) {
    incoming_ = Snapshot{request.last_included_index, request.last_included_term,
                         request.configuration, "", request.term_starts};
    incoming_term_ = request.term;
    same = true;
  }
  if (same && request.offset == incoming_.data.size()) {
    incoming_.data += request.data;
    response.done = request.done;
  }
  response.received = same ? incoming_.data.size() : 0;
  if (response.done) install_snapshot(std::exchange(incoming_, Snapshot{}));
  send(std::move(response));
}

// §7: a log that agrees with the snapshot at its last index keeps what follows; any other log
// is replaced by it. A queued transition the snapshot covers committed if the committed term at
// its index is its own: known from our log where it agrees, else from the snapshot's term starts
// (or, for a snapshot without them, known not to if its term is above the snapshot's).
void Replica::install_snapshot(Snapshot snapshot) {
  Index index = snapshot.last_included_index;
  Term term = snapshot.last_included_term;
  bool keep = index <= last_log_index() && term_at(index) == term;
  auto covered = [&](const Appended& queued) {
    Term committed = keep && queued.index > log_start() ? term_at(queued.index) : 0;
    auto start = std::upper_bound(snapshot.term_starts.begin(), snapshot.term_starts.end(),
                                  std::make_pair(queued.index, kMaxTerm + 1));
    if (!committed && start != snapshot.term_starts.begin()) committed = std::prev(start)->second;
    if (queued.index == index) committed = term;
    bool lost = committed ? queued.term != committed : queued.term > term;
    if (queued.index <= index && lost) abandon(queued.id);
    return queued.index <= index;
  };
  appended_.erase(std::remove_if(appended_.begin(), appended_.end(), covered), appended_.end());
  log_.erase(log_.begin(), keep ? log_.begin() + (index - log_start()) : log_.end());
  log_start_ = index;
  log_start_term_ = term;
  if (!keep) configs_.assign(1, {index, snapshot.configuration});
  track_configurations(last_log_index() + 1);
  storage_->save_snapshot(snapshot, log_.data(), log_.data() + log_.size());
  snapshot_ = std::make_shared<const Snapshot>(std::move(snapshot));
  state_machine_.set_snapshot(*snapshot_);
  commit_index_ = last_applied_ = index;
  durable_index_ = std::min(durable_index_, last_log_index());
}

// Only an answer to the request in flight that names another offset moves the transfer: on, or
// back to where a follower that restarted is. A late answer to an earlier chunk, or to a
// heartbeat sent before the chunk arrived, changes nothing.
void Replica::handle_install_snapshot_response(const Message& response, Peer& peer) {
  if (response.term != current_term_ || peer.progress != Progress::Snapshot || // leaders only
      response.last_included_index != peer.snapshot->last_included_index)
    return; // about another transfer
  peer.recent_active = true, peer.acked_round = std::max(peer.acked_round, response.round);
  if (response.done) return record_match(peer, response.last_included_index);
  if (response.offset != peer.snapshot_offset || response.received == peer.snapshot_offset) return;
  peer.snapshot_offset = std::min<std::uint64_t>(response.received, peer.snapshot->data.size());
  peer.snapshot_progress = now_, peer.in_flight = false;
}

// ---- The poll loop ----

Replica::Peer* Replica::find_peer(ReplicaID id) {
  auto peer = std::find_if(peers_.begin(), peers_.end(), [id](Peer& p) { return p.id == id; });
  return peer == peers_.end() ? nullptr : &*peer;
}

// Every message carries this replica's current term, which poll() makes durable before sending.
Message Replica::make_message(MessageType type, ReplicaID to) const {
  return Message{type, id_, to, current_term_};
}

void Replica::handle(Message& message) {
  // Terms start at 1 (§5.1): only a fresh voter answering a pre-vote speaks in term 0. A term
  // that cannot be incremented is bad input too; no replica campaigns into it (campaign()).
  // Requests are taken from replicas outside our configuration too: a leader adding us, or a
  // candidate of a configuration we have not heard of yet (§4.1). Answers come from members.
  Peer* peer = find_peer(message.from);
  bool answer = static_cast<int>(message.type) % 2; // every request's answer follows it
  bool pre_vote_answer = message.type == MessageType::RequestVoteResponse && message.pre_vote;
  if (message.to != id_ || message.from == id_ || (answer && !peer) ||
      (message.term == 0 && !pre_vote_answer) || message.term > kMaxTerm)
    return; // misrouted, not a member, or bad input
  // §4.2.3: a replica that hears from a leader ignores other candidates, unless a transfer sent
  // them; so does a leader, which check-quorum deposes once it has lost its majority.
  bool heard = role_ == Role::Leader || now_ < leader_contact_ + election_timeout_range_.first;
  if (message.type == MessageType::RequestVote && !message.pre_vote && !message.transfer &&
      options_.check_quorum && heard)
    return;
  // §5.1: a higher term in any message but a pre-vote request makes us a follower in that term;
  // a leader's requests, of their sender, once their handler checked them.
  bool from_leader =
      message.type == MessageType::AppendEntries || message.type == MessageType::InstallSnapshot;
  bool pre_vote_request = message.type == MessageType::RequestVote && message.pre_vote;
  if (message.term > current_term_ && !pre_vote_request && !from_leader)
    become_follower(message.term, std::nullopt);
  switch (message.type) {
  case MessageType::RequestVote: return handle_request_vote(message, heard);
  case MessageType::RequestVoteResponse: return handle_request_vote_response(message, *peer);
  case MessageType::AppendEntries: return handle_append_entries(message);
  case MessageType::AppendEntriesResponse: return handle_append_entries_response(message, *peer);
  case MessageType::InstallSnapshot: return handle_install_snapshot(message);
  case MessageType::InstallSnapshotResponse:
    return handle_install_snapshot_response(message, *peer);
  case MessageType::TimeoutNow: // §3.10: from our leader, in its term: campaign at once
    if (voter_ && role_ != Role::Leader && message.term == current_term_ && leader_ == message.from)
      campaign(false, true);
    return;
  }
}

// One deterministic pass. Storage is synced once, before any message that depends on it leaves
// and before this replica counts its own entries toward a commit.
void Replica::poll(Clock::time_point now) {
  if (broken_) throw std::logic_error("raft::Replica: a poll threw before; rebuild the replica");
  now_ = polled_ ? std::max(now_, now) : now; // time never goes back
  if (!std::exchange(polled_, true)) {        // the first poll starts the timer
    reset_election_timer();
    if (options_.lease_reads) leader_contact_ = now_; // a leader we forgot may hold a lease
  }
  try {
    for (Message& message : cluster_.receive_messages()) handle(message);
    take_reads();
    if (transfer_to_ && now_ >= transfer_deadline_) transfer_to_.reset(); // §3.10: given up
    take_changes();
    take_pending_transitions();
    if (role_ == Role::Leader) check_quorum(), advance_change();
    // A learner never campaigns, nor a replica that its latest configuration removed, unless that
    // removal is not committed here (a leader that removed itself, then lost its leadership).
    bool voter = voter_ || has(configuration_at(commit_index_).voters, id_);
    if (role_ != Role::Leader && now_ >= election_deadline_)
      voter ? campaign(options_.pre_vote) : reset_election_timer();
    if (role_ == Role::Leader) replicate();
    if (role_ == Role::Leader && !voter_ && configs_.back().first <= commit_index_)
      become_follower(current_term_, std::nullopt); // §4.2.2: removed, and that commit was sent
    storage_->sync();
    bool synced_more = std::exchange(durable_index_, last_log_index()) != last_log_index();
    for (Message& message : outbox_) cluster_.send_message(message.to, message);
    outbox_.clear();
    if (role_ == Role::Leader && synced_more) advance_commit_index();
    apply_committed();
    serve_reads();
  } catch (...) { // from storage or the user's code: our state may be half updated
    broken_ = true, outbox_.clear();
    throw;
  }
}

Clock::time_point Replica::next_deadline() const {
  if (!reads_asked_.empty() || !changes_asked_.empty() || (!accepted_.empty() && !transfer_to_))
    return now_;
  if (role_ != Role::Leader) return std::max(now_, election_deadline_);
  Clock::time_point deadline = std::min(now_ + heartbeat_timeout_, quorum_deadline_);
  if (transfer_to_) deadline = std::min(deadline, transfer_deadline_);
  for (const Peer& peer : peers_) deadline = std::min(deadline, peer.heartbeat_due);
  return std::max(now_, deadline);
}

void Replica::start() {
  while (!cluster_.halt()) {
    poll(Clock::now());
    cluster_.wait_until(next_deadline());
  }
}

// ================================================================================================
// The wire format: encode and decode, and the field codec that FileStorage's records share.
// ================================================================================================

namespace {
// Writes fields for the wire and the disk: integers as LEB128 varints, booleans as one byte 0 or
// 1, byte strings and lists after their length. Reader reads them back.
struct Writer {
  std::string out;
  void operator()(std::uint64_t value) {
    for (; value >= 0x80; value >>= 7) out += static_cast<char>(value | 0x80);
    out += static_cast<char>(value);
  }
  void operator()(bool value) { out += static_cast<char>(value); }
  void operator()(std::string_view bytes) { (*this)(std::uint64_t{bytes.size()}), out += bytes; }
  void operator()(const Entry& entry) {
    (*this)(entry.term), (*this)(entry.transition.id), (*this)(entry.transition.data);
    (*this)(entry.configuration != nullptr);
    if (entry.configuration) (*this)(*entry.configuration);
  }
  void operator()(const Configuration& config) { (*this)(config.voters), (*this)(config.learners); }
  void operator()(const Snapshot& s) { // for FileStorage's snapshot record
    (*this)(s.last_included_index), (*this)(s.last_included_term), (*this)(s.configuration.voters);
    (*this)(s.data), (*this)(s.term_starts), (*this)(s.configuration.learners);
  }
  void operator()(const std::pair<Index, Term>& pair) { (*this)(pair.first), (*this)(pair.second); }
  template <class T> void operator()(const std::vector<T>& items) {
    (*this)(std::uint64_t{items.size()});
    for (const T& item : items) (*this)(item);
  }
};

// A read past the end, an overlong varint, a boolean other than 0 or 1, or a length beyond the
// bytes left reads as 0 and clears `ok`; nothing is allocated before its length is checked.
struct Reader {
  std::string_view in;
  bool ok = true;
  std::uint64_t varint() {
    std::uint64_t value = 0;
    for (int shift = 0; shift < 64 && !in.empty(); shift += 7) {
      auto byte = static_cast<unsigned char>(in[0]);
      in.remove_prefix(1);
      value |= std::uint64_t(byte & 0x7F) << shift;
      if (byte & 0x80) continue;
      if ((byte == 0 && shift > 0) || (shift == 63 && byte > 1)) ok = false;
      return value;
    }
    return ok = false;
  }
  std::uint64_t length(std::size_t item_bytes = 1) { // of a string or list, by its least item
    std::uint64_t length = varint();
    if (length <= in.size() / item_bytes) return length;
    return ok = false;
  }
  void operator()(std::uint64_t& value) { value = varint(); }
  void operator()(bool& value) {
    std::uint64_t byte = varint();
    ok = ok && byte <= 1, value = byte == 1;
  }
  void operator()(std::string& bytes) {
    bytes.assign(in.substr(0, length()));
    in.remove_prefix(bytes.size());
  }
  void operator()(Entry& entry) {
    (*this)(entry.term), (*this)(entry.transition.id), (*this)(entry.transition.data);
    (*this)(entry.configuration);
  }
  void operator()(std::shared_ptr<Configuration>& config) { // a boolean, then the configuration
    if (bool present = false; (*this)(present), present)
      (*this)(*(config = std::make_shared<Configuration>()));
  }
  void operator()(Configuration& config) { (*this)(config.voters), (*this)(config.learners); }
  void operator()(Snapshot& s) { // a log written before term starts or learners ends early
    (*this)(s.last_included_index), (*this)(s.last_included_term), (*this)(s.configuration.voters);
    (*this)(s.data);
    if (!in.empty()) (*this)(s.term_starts);
    if (!in.empty()) (*this)(s.configuration.learners);
  }
  void operator()(std::pair<Index, Term>& pair) { (*this)(pair.first), (*this)(pair.second); }
  template <class T> void operator()(std::vector<T>& items) {
    items.resize(length(std::is_same_v<T, Entry> ? 4 : std::is_same_v<T, ReplicaID> ? 1 : 2));
    for (T& item : items) (*this)(item);
  }
};
} // namespace

// A message is its version and type, then from, to, term and the type's own fields, written by
// Writer. One list of fields per type serves both directions. An empty heartbeat in term 5 at
// index 1000 takes 12 bytes (tests/wire.cpp). A transport adds its own framing.
// 2: RequestVote and its response carry pre_vote; 3: InstallSnapshotResponse carries received,
// RequestVote transfer, AppendEntries and its response round, and TimeoutNow is new; 4: entries
// may carry a configuration, InstallSnapshot's carries learners, it and its response a round
constexpr std::uint64_t wire_version = 4;

template <class M, class Visit> void visit_fields(M& m, Visit& visit) {
  visit(m.from), visit(m.to), visit(m.term);
  switch (m.type) {
  case MessageType::RequestVote:
    visit(m.last_log_index), visit(m.last_log_term), visit(m.pre_vote), visit(m.transfer);
    break;
  case MessageType::RequestVoteResponse: visit(m.vote_granted), visit(m.pre_vote); break;
  case MessageType::AppendEntries:
    visit(m.prev_log_index), visit(m.prev_log_term), visit(m.leader_commit), visit(m.round);
    visit(m.entries);
    break;
  case MessageType::AppendEntriesResponse:
    visit(m.success), visit(m.prev_log_index), visit(m.match_index);
    visit(m.conflict_index), visit(m.conflict_term), visit(m.round);
    break;
  case MessageType::TimeoutNow: break;
  case MessageType::InstallSnapshot:
    visit(m.last_included_index), visit(m.last_included_term), visit(m.configuration);
    visit(m.term_starts);
    visit(m.offset), visit(m.done), visit(m.data), visit(m.round);
    break;
  case MessageType::InstallSnapshotResponse:
    visit(m.last_included_index), visit(m.offset), visit(m.received), visit(m.done), visit(m.round);
    break;
  }
}

std::string encode(const Message& message) {
  Writer writer;
  writer(std::uint64_t{wire_version}), writer(std::uint64_t(message.type));
  visit_fields(message, writer);
  return std::move(writer.out);
}

std::optional<Message> decode(std::string_view bytes) {
  Reader reader{bytes};
  Message message;
  std::uint64_t version = reader.varint(), type = reader.varint();
  if (!reader.ok || version != wire_version || type > std::uint64_t(MessageType::TimeoutNow))
    return std::nullopt;
  message.type = static_cast<MessageType>(type);
  visit_fields(message, reader);
  if (!reader.ok || !reader.in.empty()) return std::nullopt;
  return message;
}

// ================================================================================================
// FileStorage: one append-only file of CRC-checked records.
// ================================================================================================
//
// FileStorage(directory) keeps one file, directory/log:
//
//   "RAFTLOG1"                  8 bytes of magic
//   record*                     varint length, varint CRC-32 of the payload, payload
//   payload = kind, fields...   written by Writer: integers as LEB128 varints, booleans as one
//                               byte 0 or 1, strings and lists after their length
//     kind 1 entry:     index, term, transition id, data, has configuration[, voters, learners]
//                       (replaces the log from index on)
//     kind 2 truncate:  index (drops the log from index on)
//     kind 3 state:     currentTerm, has vote, votedFor
//     kind 4 snapshot:  last index, last term, voters, data, term starts, learners
//
// A term start is (index, term). Logs written before membership changes, whose entry records
// end after the data and whose snapshot records end after the data or the term starts, are read
// as they are. Records are appended and made durable with one fdatasync per sync(). Compaction
// writes a new file (the latest state record, the snapshot record, the entries after it, handed
// over by the Replica from its memory), fsyncs it, renames it over the log and fsyncs the
// directory: a crash at any moment leaves either the old log or the new one, complete.
//
// On open, the log is replayed. A last record cut short or failing its CRC (a torn write; an
// empty payload never passes), and zero bytes at the end (space a filesystem allocated before
// the data landed), are cut off. Anything else (a bad CRC with records after it, an unknown kind,
// an index that does not follow, another format) throws std::runtime_error with the file and the
// byte offset. To recover by hand from such an error, keep a copy of the directory, then truncate
// the log at that offset (truncate -s OFFSET dir/log): the replica restarts with the valid
// prefix and the leader sends it what it lacks. One kind of damage is not told apart from a torn
// write: the CRC covers a record's payload, not its length, so a length damaged to run past the
// end of the file reads as a torn last record, and the records after it are cut off silently.

namespace {
std::uint32_t crc32(std::string_view bytes) { // IEEE 802.3, as in zlib; a byte at a time
  static const std::array<std::uint32_t, 256> table = [] {
    std::array<std::uint32_t, 256> table{};
    for (std::uint32_t n = 0; n < 256; ++n) {
      table[n] = n;
      for (int bit = 0; bit < 8; ++bit)
        table[n] = (table[n] >> 1) ^ (0xEDB88320u & (0u - (table[n] & 1)));
    }
    return table;
  }();
  std::uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char byte : bytes) crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

constexpr std::string_view log_magic = "RAFTLOG1";
enum RecordKind : std::uint64_t { EntryRecord = 1, TruncateRecord, StateRecord, SnapshotRecord };

// A record: the payload's length and CRC-32 as varints, then the payload, which starts with its
// kind. An entry or truncation record at index i replaces the log from i on.
template <class... Fields>
void put_record(std::string& out, RecordKind kind, const Fields&... fields) {
  Writer payload, header;
  payload(std::uint64_t{kind}), (payload(fields), ...);
  header(std::uint64_t{payload.out.size()}), header(std::uint64_t{crc32(payload.out)});
  out += header.out + payload.out;
}

std::runtime_error file_error(const std::string& path, std::size_t offset, const char* what) {
  return std::runtime_error("FileStorage: " + path + ": " + what + " at offset " +
                            std::to_string(offset));
}
std::runtime_error system_error(const std::string& path, const char* call) {
  return std::runtime_error("FileStorage: " + path + ": " + call + ": " + std::strerror(errno));
}

bool write_all(int fd, std::string_view bytes) { // false, with errno, on an error
  while (!bytes.empty()) {
    ssize_t written = ::write(fd, bytes.data(), bytes.size());
    if (written < 0 && errno != EINTR) return false;
    if (written > 0) bytes.remove_prefix(written);
  }
  return true;
}

// Replays the log into `state`, returning the length of its valid part. A last record cut short
// or failing its CRC, and zero bytes to the end (a torn write) end the replay; damage anywhere
// else throws.
std::size_t replay_log(const std::string& path, std::string_view contents, Storage::State& state) {
  if (contents.substr(0, log_magic.size()) != log_magic)
    throw file_error(path, 0, "not a log of this format (bad magic)");
  std::size_t offset = log_magic.size();
  for (Index first = 1; offset < contents.size();) { // first: the index of state.entries[0]
    if (contents.find_first_not_of('\0', offset) == std::string_view::npos)
      break; // zeros to the end: space a crash allocated but never wrote
    Reader record{contents.substr(offset)};
    std::uint64_t size = record.varint(), crc = record.varint();
    if (!record.ok || size > record.in.size()) break; // the last record, cut short
    std::size_t end = contents.size() - record.in.size() + size;
    Reader reader{record.in.substr(0, size)};
    bool intact = size > 0 && crc32(reader.in) == crc; // a payload holds its kind: never empty
    if (!intact && contents.find_first_not_of('\0', end) != std::string_view::npos)
      throw file_error(path, offset, "bad CRC in the middle of the log");
    if (!intact) break; // the last record, torn
    std::uint64_t kind = reader.varint(), index = 0;
    if (kind == EntryRecord || kind == TruncateRecord) {
      reader(index);
      reader.ok = reader.ok && index >= first && index <= first + state.entries.size();
      if (reader.ok) state.entries.resize(index - first);
      if (kind == EntryRecord) { // a log written before configurations ends after the data
        Entry& entry = state.entries.emplace_back();
        reader(entry.term), reader(entry.transition.id), reader(entry.transition.data);
        if (!reader.in.empty()) reader(entry.configuration);
      }
    } else if (kind == StateRecord) {
      bool voted = false;
      reader(state.current_term), reader(voted), reader(index);
      state.voted_for = voted ? std::optional<ReplicaID>(index) : std::nullopt;
    } else if (kind == SnapshotRecord) { // first in a compacted log
      reader(state.snapshot.emplace());
      state.entries.clear();
      first = state.snapshot->last_included_index + 1;
    }
    if (!reader.ok || !reader.in.empty() || kind < EntryRecord || kind > SnapshotRecord)
      throw file_error(path, offset, "inconsistent log record");
    offset = end;
  }
  return offset;
}

std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in && errno == ENOENT) return std::nullopt;
  std::ostringstream contents;
  if (!(contents << in.rdbuf())) throw system_error(path, "read");
  return std::move(contents).str();
}

void fsync_directory(const std::string& directory) {
  int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY);
  bool synced = fd >= 0 && ::fsync(fd) == 0;
  if (fd >= 0) ::close(fd);
  if (!synced) throw system_error(directory, "fsync");
}
} // namespace

// Recovery makes what it found durable before anything can depend on it: bytes a killed process
// wrote but never synced may still sit in the page cache, and a power cut would erase them after
// this replica had acknowledged them. So the log is fdatasynced, and the directory fsynced (its
// parent too, when it was just created), before the constructor returns.
FileStorage::FileStorage(std::string directory)
    : directory_(std::move(directory)), path_(directory_ + "/log") {
  std::size_t parent = directory_.find_last_of('/', directory_.find_last_not_of('/'));
  if (::mkdir(directory_.c_str(), 0777) == 0)
    fsync_directory(parent == std::string::npos ? "." : directory_.substr(0, parent + 1) + ".");
  else if (errno != EEXIST)
    throw system_error(directory_, "mkdir");
  std::optional<std::string> log = read_file(path_);
  if (!log) { // a new directory
    replace_log(std::string(log_magic));
    return;
  }
  State recovered;
  std::size_t length = replay_log(path_, *log, recovered);
  if (length < log->size() && ::truncate(path_.c_str(), length) != 0) // a torn last record
    throw system_error(path_, "truncate");
  current_term_ = recovered.current_term, voted_for_ = recovered.voted_for;
  log_fd_ = ::open(path_.c_str(), O_WRONLY | O_APPEND);
  if (log_fd_ < 0) throw system_error(path_, "open");
  if (::fdatasync(log_fd_) != 0) throw system_error(path_, "fdatasync");
  fsync_directory(directory_);
}

FileStorage::~FileStorage() {
  if (log_fd_ >= 0) ::close(log_fd_);
}

// After an I/O error the file may end in a partial record that only recovery can cut off: this
// object refuses every call, and a new FileStorage on the directory recovers.
void FileStorage::check_usable() const {
  if (failed_)
    throw std::runtime_error("FileStorage: " + path_ +
                             ": an earlier I/O error left the log unsettled; open it again");
}

// The durable state, read from the file on every call: a Replica rebuilt over this object (as
// after a crash) recovers everything synced, and nothing that was not.
Storage::State FileStorage::load() {
  check_usable();
  State state;
  pending_.clear(); // never synced: lost, as in a crash
  try {
    std::optional<std::string> log = read_file(path_);
    if (!log) throw system_error(path_, "read");
    replay_log(path_, *log, state);
  } catch (...) {
    failed_ = true;
    throw;
  }
  current_term_ = state.current_term, voted_for_ = state.voted_for;
  return state;
}

void FileStorage::save_term_and_vote(Term current_term, std::optional<ReplicaID> voted_for) {
  check_usable();
  current_term_ = current_term, voted_for_ = voted_for;
  put_record(pending_, StateRecord, current_term, voted_for.has_value(), voted_for.value_or(0));
}

void FileStorage::save_entries(Index first, const Entry* begin, const Entry* end) {
  check_usable();
  if (begin == end) put_record(pending_, TruncateRecord, first);
  for (const Entry* entry = begin; entry != end; ++entry)
    put_record(pending_, EntryRecord, first + (entry - begin), *entry);
}

// Compaction rewrites the log as term and vote, the snapshot, and the entries after it, and
// renames it over the old one: a crash leaves either log, both complete. What was waiting for
// sync() is in the new log too.
void FileStorage::save_snapshot(const Snapshot& snapshot, const Entry* begin, const Entry* end) {
  check_usable();
  std::string rewritten(log_magic);
  put_record(rewritten, StateRecord, current_term_, voted_for_.has_value(), voted_for_.value_or(0));
  put_record(rewritten, SnapshotRecord, snapshot);
  for (const Entry* entry = begin; entry != end; ++entry)
    put_record(rewritten, EntryRecord, snapshot.last_included_index + 1 + (entry - begin), *entry);
  replace_log(rewritten);
  pending_.clear();
}

// Group commit: everything saved since the last sync goes out in one write and one fdatasync.
void FileStorage::sync() {
  check_usable();
  if (pending_.empty()) return;
  failed_ = true; // until both calls succeed
  if (!write_all(log_fd_, pending_) || ::fdatasync(log_fd_) != 0)
    throw system_error(path_, "write or fdatasync");
  failed_ = false;
  pending_.clear();
}

// Write a temporary file, fsync it, rename it over the log, fsync the directory, reopen.
void FileStorage::replace_log(const std::string& contents) {
  failed_ = true; // until every step succeeds
  std::string temporary = path_ + ".tmp";
  int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0666);
  if (fd < 0) throw system_error(temporary, "open");
  bool synced = write_all(fd, contents) && ::fsync(fd) == 0;
  ::close(fd);
  if (!synced || ::rename(temporary.c_str(), path_.c_str()) != 0)
    throw system_error(path_, "write, fsync or rename");
  fsync_directory(directory_);
  if (log_fd_ >= 0) ::close(log_fd_);
  log_fd_ = ::open(path_.c_str(), O_WRONLY | O_APPEND);
  if (log_fd_ < 0) throw system_error(path_, "open");
  failed_ = false;
}

} // namespace raft
