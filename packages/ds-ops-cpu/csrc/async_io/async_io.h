// Async file I/O of host buffers: O_DIRECT where the buffer, the file offset and the length are
// aligned (4096 bytes), buffered I/O for unaligned tails and filesystems without O_DIRECT.
// Each request is cut into block_size pieces served by a persistent pool of
// intra_op_parallelism * queue_depth I/O threads (blocking pread/pwrite: queue_depth requests in
// flight per intra-op lane). No system library beyond libc/pthreads.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace ds_aio {

constexpr int64_t kAlign = 4096;

struct Request {
    bool read = false;
    char* buf = nullptr;
    int64_t nbytes = 0;
    int64_t file_offset = 0;
    std::string path;
    int fd_direct = -1;    // -1: O_DIRECT unavailable for this file (buffered only)
    int fd_buffered = -1;
    int64_t npieces = 0;
    int64_t pending = 0;   // pieces not finished (guarded by the handle's mutex)
    bool done = false;
    std::string error;     // first failure, names the file
};

class AioHandle {
public:
    AioHandle(int64_t block_size, int queue_depth, bool single_submit, bool overlap_events,
              int intra_op_parallelism);
    ~AioHandle();
    AioHandle(const AioHandle&) = delete;
    AioHandle& operator=(const AioHandle&) = delete;

    // Submit a read (into buf) or write (from buf) of nbytes at file_offset. Sync: returns when
    // done, throws std::runtime_error naming the file on failure. Async: returns at once; wait()
    // completes it. Returns 0 (sync) or the number of async requests now pending.
    int64_t submit(bool read, uintptr_t buf, int64_t nbytes, const std::string& path, int64_t file_offset,
                   bool async_op);
    // Wait for every async request; returns how many completed; throws if any failed.
    int64_t wait();
    int64_t pending() const;

    int64_t block_size() const { return block_size_; }
    int queue_depth() const { return queue_depth_; }
    bool single_submit() const { return single_submit_; }
    bool overlap_events() const { return overlap_events_; }
    int intra_op_parallelism() const { return intra_op_; }
    int num_threads() const { return static_cast<int>(threads_.size()); }
    int64_t direct_bytes() const { return direct_bytes_.load(); }
    int64_t buffered_bytes() const { return buffered_bytes_.load(); }

private:
    struct Piece {
        std::shared_ptr<Request> req;
        int64_t index;
    };
    void worker();
    void run_piece(Request& r, int64_t index);
    void finish(const std::shared_ptr<Request>& r, const std::string& err);
    std::shared_ptr<Request> open_request(bool read, uintptr_t buf, int64_t nbytes, const std::string& path,
                                          int64_t file_offset);
    void wait_one(const std::shared_ptr<Request>& r);

    int64_t block_size_;
    int queue_depth_;
    bool single_submit_;
    bool overlap_events_;
    int intra_op_;
    std::vector<std::thread> threads_;
    mutable std::mutex mu_;
    std::condition_variable work_cv_;
    std::condition_variable done_cv_;
    std::deque<Piece> queue_;
    std::vector<std::shared_ptr<Request>> async_;
    bool stop_ = false;
    std::atomic<int64_t> direct_bytes_{0};
    std::atomic<int64_t> buffered_bytes_{0};
};

// Whether O_DIRECT opens work in this folder (false on tmpfs and some network filesystems).
bool direct_io_supported(const std::string& folder);
// mlock/munlock a host range (best effort: false when RLIMIT_MEMLOCK forbids it).
bool lock_memory(uintptr_t ptr, int64_t nbytes);
bool unlock_memory(uintptr_t ptr, int64_t nbytes);

}  // namespace ds_aio
