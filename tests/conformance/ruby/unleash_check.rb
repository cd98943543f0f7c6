# Evaluates cases with the real ruby-unleash 3.2.5 client (Debian's ruby-unleash) against a
# server speaking the Unleash client API, and writes the answers as JSON.
#
# usage: ruby unleash_check.rb BASE_URL CASES_JSON OUT_JSON [TOKEN]
#   BASE_URL   e.g. http://127.0.0.1:PORT/api (the client appends /client/features)
#   CASES_JSON [{"flag": "f", "context": {"userId": .., "sessionId": .., "remoteAddress": ..,
#               "properties": {..}}, "variant": true|false}, ...]
#              A missing "context" is an empty Unleash::Context; "context": null passes nil.
#   OUT_JSON   [{"enabled": bool, "variant": {"name", "enabled", "payload"} | null}, ...]
#              If the client raises for a case (ruby-unleash raises on constraint operators
#              other than IN/NOT_IN and on a missing property), that entry is
#              {"enabled": null, "variant": null, "error": "Class: message"}.
#
# The client fetches the flags exactly as it normally does (Unleash::Client.new: POST
# /client/register, then a synchronous GET /client/features). ruby-unleash swallows fetch
# errors and falls back to a backup file, so the backup file lives in a fresh temp dir and
# the script checks that the toggle cache holds exactly the features of a 200 response.
# Exits 1 with a message if the fetch did not succeed or loaded no toggles.
require 'json'
require 'logger'
require 'tmpdir'
require 'fileutils'
require 'unleash'
require 'unleash/context'

base_url, cases_path, out_path, token = ARGV
abort 'usage: ruby unleash_check.rb BASE_URL CASES_JSON OUT_JSON [TOKEN]' unless out_path

def fail!(msg)
  warn "unleash_check: FAILED: #{msg}"
  exit 1
end
fail!("expected ruby-unleash 3.2.5, loaded #{Unleash::VERSION}") unless Unleash::VERSION == '3.2.5'

# Observe (without changing) every GET the client makes, to prove where the toggles came from,
# and the exception a failed fetch raises (the client only logs it at DEBUG level).
module ObserveGet
  RESPONSES = []
  def get(url, etag = nil)
    response = super
    RESPONSES << [url, response]
    response
  end
end
Unleash::Util::Http.singleton_class.prepend(ObserveGet)
module ObserveFetch
  ERRORS = []
  def fetch
    super
  rescue StandardError => e
    ERRORS << "#{e.class}: #{e.message.lines.first.to_s.strip}"
    raise
  end
end
Unleash::ToggleFetcher.prepend(ObserveFetch)

cases = JSON.parse(File.read(cases_path))
backup_dir = Dir.mktmpdir('vexil-unleash-backup')
client = nil

begin
  client = Unleash::Client.new(
    url: base_url,
    app_name: 'vexil-conformance',
    custom_http_headers: token ? { 'Authorization' => token } : {},
    disable_metrics: true,        # no metrics thread, no POST /client/metrics
    refresh_interval: 3600,       # the poller thread sleeps first; it is killed below
    retry_limit: 0,
    timeout: 10,
    backup_file: File.join(backup_dir, 'unleash-repo.json'), # never a stale file
    logger: Logger.new($stderr),
    log_level: Logger::WARN
  )

  # -- the fetch really happened and really filled the cache --
  fetches = ObserveGet::RESPONSES.select { |url, _| url == "#{base_url}/client/features" }
  fail!("GET #{base_url}/client/features got no response: #{ObserveFetch::ERRORS.first}") if fetches.empty?
  _, response = fetches.first
  fail!("GET #{base_url}/client/features answered #{response.code}: #{response.body.to_s[0, 300]}") \
    unless response.code == '200'
  fail!("the client could not use the 200 response: #{ObserveFetch::ERRORS.first}") if ObserveFetch::ERRORS.any?
  served = JSON.parse(response.body)['features']
  cache = Unleash.toggle_fetcher&.toggle_cache
  fail!('the toggle cache is empty (fetch or parse failed; see the client log above)') \
    unless cache.is_a?(Array) && !cache.empty?
  fail!('the toggle cache differs from the features the server sent') unless cache == served
  fail!('Unleash.toggles was not updated from the fetch') unless Unleash.toggles == served

  fallback = Unleash::Variant.new(name: 'disabled', enabled: false)
  results = cases.map do |c|
    context = c.key?('context') ? (c['context'] && Unleash::Context.new(c['context'])) : Unleash::Context.new({})
    out = { 'enabled' => nil, 'variant' => nil }
    begin
      out['enabled'] = client.is_enabled?(c.fetch('flag'), context, false)
      if c['variant']
        # 3.2.5's Client#get_variant raises ArgumentError when no fallback Variant is given
        # (it passes nil on to FeatureToggle#get_variant); the fallback does not change results.
        v = client.get_variant(c.fetch('flag'), context, fallback)
        out['variant'] = { 'name' => v.name, 'enabled' => v.enabled, 'payload' => v.payload }
      end
    rescue StandardError => e
      out['error'] = "#{e.class}: #{e.message.lines.first.to_s.strip}"
      warn "unleash_check: #{c['flag']}: client raised #{out['error']}"
    end
    out
  end

  File.write(out_path, JSON.pretty_generate(results))
ensure
  Unleash.logger&.level = Logger::ERROR # silence "thread ToggleFetcher will exit!"
  client&.shutdown! # kill the fetcher thread (no save!, no metrics)
  FileUtils.remove_entry(backup_dir)
end
