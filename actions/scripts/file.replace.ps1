# op: file.replace
$DataB64 = '__FAILOVER_DATA__'
$ErrorActionPreference = 'Stop'
try {
    $Data = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String($DataB64)) | ConvertFrom-Json
    $path = [string]$Data.path
    $backup = [string]$Data.backup_path
    $wanted = ([string]$Data.sha256).ToLowerInvariant()
    $expected = ([string]$Data.expected_sha256).ToLowerInvariant()
    $bytes = [Convert]::FromBase64String([string]$Data.content_b64)
    # .NET resolves relative paths against the process directory, not PowerShell's location.
    if (-not [IO.Path]::IsPathRooted($path) -or -not [IO.Path]::IsPathRooted($backup)) {
        throw "not an absolute path: '$path' or '$backup'"
    }
    if (-not (Test-Path -LiteralPath $path -PathType Leaf)) {
        throw "file not found: $path"
    }
    $current = (Get-FileHash -LiteralPath $path -Algorithm SHA256).Hash.ToLowerInvariant()
    $changed = $false
    if ($current -ne $wanted) {
        if ($current -ne $expected) {
            throw "file $path changed since it was read (sha256 is $current, expected $expected); nothing was written"
        }
        if (Test-Path -LiteralPath $backup) {
            throw "backup file already exists: $backup"
        }
        # The temporary file must be in the same folder: File.Replace only swaps within one volume.
        $folder = [IO.Path]::GetDirectoryName($path)
        $tmp = [IO.Path]::Combine($folder, [IO.Path]::GetFileName($path) + '.' + [Guid]::NewGuid().ToString('N') + '.tmp')
        try {
            [IO.File]::WriteAllBytes($tmp, $bytes)
            $written = (Get-FileHash -LiteralPath $tmp -Algorithm SHA256).Hash.ToLowerInvariant()
            if ($written -ne $wanted) {
                throw "content check failed: written sha256 $written, expected $wanted; nothing was replaced"
            }
            $current = (Get-FileHash -LiteralPath $path -Algorithm SHA256).Hash.ToLowerInvariant()
            if ($current -ne $expected) {
                throw "file $path changed since it was read (sha256 is $current, expected $expected); nothing was written"
            }
            # File.Replace keeps the original's ACLs and attributes and leaves the original as the backup.
            [IO.File]::Replace($tmp, $path, $backup)
            $changed = $true
        }
        finally {
            if (Test-Path -LiteralPath $tmp) {
                Remove-Item -LiteralPath $tmp -Force
            }
        }
    }
    $backupPath = $null
    if ($changed) {
        $backupPath = $backup
    }
    [ordered]@{
        ok          = $true
        path        = $path
        backup_path = $backupPath
        sha256      = $wanted
        changed     = $changed
    } | ConvertTo-Json -Compress
}
catch {
    [ordered]@{ ok = $false; error = $_.Exception.Message } | ConvertTo-Json -Compress
    exit 1
}
