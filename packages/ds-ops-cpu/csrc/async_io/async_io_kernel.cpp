// Thread-pool async file I/O (see async_io.h).
#include "async_io.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace ds_aio {

namespace {

std::string errno_text(int err) { return std::string(std::strerror(err)) + " (errno " + std::to_string(err) + ")"; }

bool aligned(uintptr_t v) { return (v & static_cast<uintptr_t>(kAlign - 1)) == 0; }

// Full-length pread/pwrite (restarts on EINTR and short transfers). Returns "" or the error.
std::string transfer(bool read, int fd, char* buf, int64_t len, int64_t off, const std::string& path) {
    int64_t done = 0;
    while (done < len) {
        ssize_t n = read ? ::pread(fd, buf + done, static_cast<size_t>(len - done), off + done)
                         : ::pwrite(fd, buf + done, static_cast<size_t>(len - done), off + done);
        if (n < 0) {
            if (errno == EINTR) continue;
            int err = errno;
            return std::string(read ? "read from '" : "write to '") + path + "' failed at file offset " +
                   std::to_string(off + done) + ": " + errno_text(err);
        }
        if (n == 0) {
            if (read)
                return "read from '" + path + "': the file ends at offset " + std::to_string(off + done) +
                       ", before the requested " + std::to_string(len - done) + " more bytes";
            return "write to '" + path + "' made no progress at offset " + std::to_string(off + done);
        }
        done += n;
    }
    return "";
}

}  // namespace

AioHandle::AioHandle(int64_t block_size, int queue_depth, bool single_submit, bool overlap_events,
                     int intra_op_parallelism)
    : block_size_(block_size), queue_depth_(queue_depth), single_submit_(single_submit),
      overlap_events_(overlap_events), intra_op_(intra_op_parallelism) {
    if (block_size <= 0) throw std::invalid_argument("aio_handle: block_size must be > 0, got " + std::to_string(block_size));
    if (queue_depth <= 0) throw std::invalid_argument("aio_handle: queue_depth must be > 0, got " + std::to_string(queue_depth));
    if (intra_op_parallelism <= 0)
        throw std::invalid_argument("aio_handle: intra_op_parallelism must be > 0, got " +
                                    std::to_string(intra_op_parallelism));
    // single_submit: one request in flight per lane (DeepSpeed submits one iocb at a time).
    int depth = single_submit ? 1 : queue_depth;
    int n = std::min(intra_op_parallelism * depth, 128);
    threads_.reserve(n);
    for (int i = 0; i < n; ++i) threads_.emplace_back([this] { worker(); });
}

AioHandle::~AioHandle() {
    try {
        wait();
    } catch (...) {
    }
    {
        std::lock_guard<std::mutex> g(mu_);
        stop_ = true;
    }
    work_cv_.notify_all();
    for (auto& t : threads_) t.join();
}

void AioHandle::worker() {
    for (;;) {
        Piece p;
        {
            std::unique_lock<std::mutex> lk(mu_);
            work_cv_.wait(lk, [this] { return stop_ || !queue_.empty(); });
            if (queue_.empty()) return;
            p = std::move(queue_.front());
            queue_.pop_front();
        }
        std::string err;
        bool skip;
        {
            std::lock_guard<std::mutex> g(mu_);
            skip = !p.req->error.empty();
        }
        if (!skip) {
            try {
                run_piece(*p.req, p.index);
            } catch (const std::exception& e) {
                err = e.what();
            }
        }
        finish(p.req, err);
    }
}

void AioHandle::run_piece(Request& r, int64_t index) {
    int64_t off = index * block_size_;
    int64_t len = std::min(block_size_, r.nbytes - off);
    char* buf = r.buf + off;
    int64_t foff = r.file_offset + off;
    int64_t dlen = 0;
    if (r.fd_direct >= 0 && aligned(reinterpret_cast<uintptr_t>(buf)) && aligned(static_cast<uintptr_t>(foff)))
        dlen = len & ~(kAlign - 1);
    std::string err;
    if (dlen > 0) {
        err = transfer(r.read, r.fd_direct, buf, dlen, foff, r.path);
        if (err.empty()) direct_bytes_ += dlen;
    }
    if (err.empty() && len > dlen) {
        err = transfer(r.read, r.fd_buffered, buf + dlen, len - dlen, foff + dlen, r.path);
        if (err.empty()) buffered_bytes_ += len - dlen;
    }
    if (!err.empty()) throw std::runtime_error(err);
}

void AioHandle::finish(const std::shared_ptr<Request>& r, const std::string& err) {
    bool last;
    {
        std::lock_guard<std::mutex> g(mu_);
        if (!err.empty() && r->error.empty()) r->error = err;
        last = --r->pending == 0;
    }
    if (last) {
        if (r->fd_direct >= 0) ::close(r->fd_direct);
        if (r->fd_buffered >= 0 && ::close(r->fd_buffered) != 0) {
            int e = errno;
            std::lock_guard<std::mutex> g(mu_);
            if (r->error.empty()) r->error = "close of '" + r->path + "' failed: " + errno_text(e);
        }
        {
            std::lock_guard<std::mutex> g(mu_);
            r->done = true;
        }
        done_cv_.notify_all();
    }
}

std::shared_ptr<Request> AioHandle::open_request(bool read, uintptr_t buf, int64_t nbytes, const std::string& path,
                                                 int64_t file_offset) {
    if (nbytes < 0) throw std::invalid_argument("aio: negative byte count for '" + path + "'");
    if (file_offset < 0) throw std::invalid_argument("aio: negative file offset for '" + path + "'");
    auto r = std::make_shared<Request>();
    r->read = read;
    r->buf = reinterpret_cast<char*>(buf);
    r->nbytes = nbytes;
    r->file_offset = file_offset;
    r->path = path;
    int flags = read ? O_RDONLY : (O_WRONLY | O_CREAT);
    r->fd_buffered = ::open(path.c_str(), flags | O_CLOEXEC, 0644);
    if (r->fd_buffered < 0) {
        int e = errno;
        throw std::runtime_error(std::string("aio: cannot open '") + path + "' for " + (read ? "reading" : "writing") +
                                 ": " + errno_text(e));
    }
    if (nbytes >= kAlign && aligned(buf) && aligned(static_cast<uintptr_t>(file_offset))) {
        // Note: EINVAL here means the filesystem has no O_DIRECT (tmpfs): buffered I/O then.
        r->fd_direct = ::open(path.c_str(), flags | O_DIRECT | O_CLOEXEC, 0644);
    }
    r->npieces = (nbytes + block_size_ - 1) / block_size_;
    r->pending = r->npieces;
    return r;
}

int64_t AioHandle::submit(bool read, uintptr_t buf, int64_t nbytes, const std::string& path, int64_t file_offset,
                          bool async_op) {
    auto r = open_request(read, buf, nbytes, path, file_offset);
    if (r->npieces == 0) {
        if (r->fd_direct >= 0) ::close(r->fd_direct);
        ::close(r->fd_buffered);
        return async_op ? pending() : 0;
    }
    {
        std::lock_guard<std::mutex> g(mu_);
        for (int64_t i = 0; i < r->npieces; ++i) queue_.push_back(Piece{r, i});
        if (async_op) async_.push_back(r);
    }
    work_cv_.notify_all();
    if (async_op) return pending();
    wait_one(r);
    if (!r->error.empty()) throw std::runtime_error(r->error);
    return 0;
}

void AioHandle::wait_one(const std::shared_ptr<Request>& r) {
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [&] { return r->done; });
}

int64_t AioHandle::wait() {
    std::vector<std::shared_ptr<Request>> reqs;
    {
        std::lock_guard<std::mutex> g(mu_);
        reqs.swap(async_);
    }
    std::string errors;
    for (auto& r : reqs) {
        wait_one(r);
        if (!r->error.empty()) errors += (errors.empty() ? "" : "; ") + r->error;
    }
    if (!errors.empty()) throw std::runtime_error(errors);
    return static_cast<int64_t>(reqs.size());
}

int64_t AioHandle::pending() const {
    std::lock_guard<std::mutex> g(mu_);
    return static_cast<int64_t>(async_.size());
}

bool direct_io_supported(const std::string& folder) {
    std::string probe = folder + "/.ds_aio_probe_" + std::to_string(::getpid());
    int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_DIRECT | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        ::unlink(probe.c_str());
        if (e == EINVAL) return false;
        throw std::runtime_error("aio: cannot create a file in '" + folder + "': " + errno_text(e));
    }
    void* mem = nullptr;
    bool ok = false;
    if (::posix_memalign(&mem, kAlign, kAlign) == 0) {
        std::memset(mem, 0, kAlign);
        ok = ::pwrite(fd, mem, kAlign, 0) == kAlign;
        std::free(mem);
    }
    ::close(fd);
    ::unlink(probe.c_str());
    return ok;
}

bool lock_memory(uintptr_t ptr, int64_t nbytes) { return ::mlock(reinterpret_cast<void*>(ptr), nbytes) == 0; }
bool unlock_memory(uintptr_t ptr, int64_t nbytes) { return ::munlock(reinterpret_cast<void*>(ptr), nbytes) == 0; }

}  // namespace ds_aio
